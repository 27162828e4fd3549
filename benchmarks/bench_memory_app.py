"""Peak memory of the app on a long recording: ``bids-neurobolt ... --steps sync,clean``.

Builds a BIDS dataset with one long simultaneous EEG-fMRI run (default: 60 minutes, 63 EEG
channels + ECG at 5 kHz, 4.3 GB of float32 samples) by tiling a one-minute simulated
recording (its samples, markers and volumes repeated), then runs the command line in a child
process and reports the child's peak resident memory (``getrusage(RUSAGE_CHILDREN)``), its
wall time and real-time factor, side by side with the size of the recording: the ratio shows
that the app never holds the recording in memory (it reads channel chunks from the file).

Usage::

    python benchmarks/bench_memory_app.py [--minutes 60] [--channels 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_neurobolt.simulate import simulate_dataset

TR = 2.0
EEG = "sub-01/eeg/sub-01_task-rest"
BOLD = "sub-01/func/sub-01_task-rest_bold.nii.gz"


def tile_dataset(root: Path, minutes: int, channels: int) -> tuple[int, float]:
    """Write a dataset whose run is a one-minute simulation repeated ``minutes`` times.

    Returns
    -------
    n_samples, sfreq
    """
    tile = root.parent / "tile"
    simulate_dataset(
        tile, n_subjects=1, duration=60.0, sfreq=5000.0, tr=TR, seed=0,
        n_channels=channels - 1, resolution=4.0, pre_scan=0.0, post_scan=0.0,
    )  # fmt: skip
    shutil.copytree(tile, root, ignore=shutil.ignore_patterns("sourcedata"))
    data = (tile / f"{EEG}_eeg.eeg").read_bytes()
    n_per_tile = len(data) // (4 * channels)
    with (root / f"{EEG}_eeg.eeg").open("wb") as out:
        for _ in range(minutes):
            out.write(data)
    events = pd.read_csv(tile / f"{EEG}_events.tsv", sep="\t", dtype={"value": str})
    tiles = []
    for k in range(minutes):
        part = events.copy()
        part["sample"] = part["sample"] + k * n_per_tile
        part["onset"] = (part["sample"] / 5000.0).round(6)
        tiles.append(part)
    pd.concat(tiles).to_csv(root / f"{EEG}_events.tsv", sep="\t", index=False)
    vmrk = (tile / f"{EEG}_eeg.vmrk").read_text()
    head, _, body = vmrk.partition("Mk1=")
    markers = [line.split("=", 1)[1] for line in ("Mk1=" + body).splitlines() if "=" in line]
    out_lines, index = [], 1
    for k in range(minutes):
        for marker in markers:
            kind, desc, pos, *rest = marker.split(",")
            if kind == "New Segment" and k > 0:
                continue
            shifted = int(pos) + k * n_per_tile
            out_lines.append(f"Mk{index}={','.join([kind, desc, str(shifted), *rest])}")
            index += 1
    (root / f"{EEG}_eeg.vmrk").write_text(head + "\n".join(out_lines) + "\n")
    bold = nib.load(tile / BOLD)
    n_vol = bold.shape[3] * minutes
    small = nib.Nifti1Image(np.zeros((2, 2, 2, n_vol), np.int16), bold.affine, bold.header)
    small.header.set_data_shape((2, 2, 2, n_vol))
    nib.save(small, root / BOLD)
    return n_per_tile * minutes, 5000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--channels", type=int, default=64, help="EEG + ECG")
    parser.add_argument("--keep", type=Path, help="keep the dataset and outputs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        root = base / "bids"
        n_samples, sfreq = tile_dataset(root, args.minutes, args.channels)
        size_mib = n_samples * args.channels * 4 / 2**20
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bids_neurobolt", str(root), str(base / "out"), "participant",
             "--steps", "sync,clean", "--skip-bids-validation", "-w", str(base / "work"), "-q"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            print(done.stdout, done.stderr)
            raise SystemExit(done.returncode)
        quality = next((base / "out").rglob("*_desc-clean_quality.json"))
        diag = json.loads(quality.read_text())
        print(
            f"{args.channels} channels x {args.minutes} min at {sfreq:g} Hz: recording "
            f"{size_mib:.0f} MiB as float32 | app peak RSS {peak:.0f} MiB "
            f"(ratio peak / recording {peak / size_mib:.2f}) | command {seconds:.0f} s, "
            f"cleaning {diag['seconds']:.0f} s ({diag['real_time_factor']:.0f}x real time)"
        )


if __name__ == "__main__":
    main()
