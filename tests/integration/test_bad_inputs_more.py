"""More bad inputs: EEG content, channels, NIfTI headers, atlases, options, permissions, disk.

Each case of :data:`CASES` damages a private copy of the simulated dataset (or passes a bad
option), runs the command line with only the stages it needs, and checks the exit code,
fragments of the message (the file, the problem) and that the input is byte-identical
afterwards. Warnings that do not stop a run, symlinked datasets, a full disk and model
checkpoints have tests of their own below.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.errors import DataError, ExitCode, MissingInputError

from .conftest import atlas_args, run_cli, tree_digest
from .test_bad_inputs import BOLD, EEG, edit_volume_markers

N_CHANNELS = 17  # 16 EEG + ECG, float32, multiplexed
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# --------------------------------------------------------------------------- damage


def eeg_samples(root: Path) -> np.memmap:
    """The raw samples of sub-01 (n_samples x n_channels), writable in place."""
    return np.memmap(root / f"{EEG}_eeg.eeg", dtype="<f4", mode="r+").reshape(-1, N_CHANNELS)


def nan_samples(root: Path, tmp: Path) -> None:
    data = eeg_samples(root)
    data[20_000:20_010, 2] = np.nan  # F3, 10 samples at 20 s
    data.flush()


def inf_sample(root: Path, tmp: Path) -> None:
    data = eeg_samples(root)
    data[100, 5] = np.inf  # C4 at 0.1 s
    data.flush()


def keep_seconds(seconds: float) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        path = root / f"{EEG}_eeg.eeg"
        path.write_bytes(path.read_bytes()[: int(seconds * 1000) * N_CHANNELS * 4])

    return damage


def edit_text(relative: str, old: str, new: str) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        path = root / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return damage


def shift_events_tsv_only(samples: int) -> Callable[[Path, Path], None]:
    """Move every volume marker of events.tsv (not of the .vmrk) by ``samples``."""

    def damage(root: Path, tmp: Path) -> None:
        path = root / f"{EEG}_events.tsv"
        events = pd.read_csv(path, sep="\t", dtype={"value": str})
        volume = events["trial_type"] == "Response/R128"
        sfreq = float(events.loc[volume, "sample"].iloc[0] / events.loc[volume, "onset"].iloc[0])
        events.loc[volume, "sample"] += samples
        events.loc[volume, "onset"] = (events.loc[volume, "sample"] / sfreq).round(6)
        events.to_csv(path, sep="\t", index=False)

    return damage


def both(*damages: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        for one in damages:
            one(root, tmp)

    return damage


extra_channel_in_header = both(
    edit_text(f"{EEG}_eeg.vhdr", "NumberOfChannels=17", "NumberOfChannels=18"),
    edit_text(f"{EEG}_eeg.vhdr", "Ch17=ECG,FCz,1,µV", "Ch17=ECG,FCz,1,µV\nCh18=EXG1,FCz,1,µV"),
)
unknown_channel = edit_text(f"{EEG}_channels.tsv", "Fp1\tEEG", "Xyz1\tEEG")
duplicate_in_header = both(
    edit_text(f"{EEG}_eeg.vhdr", "Ch2=Fp2,", "Ch2=Fp1,"),
    edit_text(f"{EEG}_channels.tsv", "Fp2\tEEG", "Fp1\tEEG"),
)
duplicate_in_channels_tsv = edit_text(f"{EEG}_channels.tsv", "Fp2\tEEG", "Fp1\tEEG")


def duplicated_volume_marker(root: Path, tmp: Path) -> None:
    edit_volume_markers(root, lambda s: np.sort(np.concatenate([s, s[10:11]])))


def ambiguous_volume_markers(root: Path, tmp: Path) -> None:
    """A second marker name, 24 times as well: the count cannot single one out."""
    path = root / f"{EEG}_events.tsv"
    events = pd.read_csv(path, sep="\t", dtype={"value": str})
    volumes = events[events.trial_type == "Response/R128"].copy()
    volumes["sample"] += 500
    volumes["onset"] = volumes["sample"] / 1000.0
    volumes["trial_type"], volumes["value"] = "Stimulus/S128", "S128"
    pd.concat([events, volumes]).sort_values("sample", kind="stable").to_csv(
        path, sep="\t", index=False
    )


def edit_nifti_header(offset: int, fmt: str, *values: object) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        path = root / BOLD
        data = bytearray(gzip.decompress(path.read_bytes()))
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        path.write_bytes(gzip.compress(bytes(data)))

    return damage


def edit_bold_sidecar(**changes: object) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        path = root / BOLD.replace(".nii.gz", ".json")
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))

    return damage


def bold_in_scanner_space(root: Path, tmp: Path) -> None:
    path = root / BOLD
    image = nib.load(path)
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    nib.save(image, path)


def _atlas_copy(root: Path, tmp: Path, name: str, affine_shift: float = 0.0) -> Path:
    source = Path(atlas_args(root)[1])
    folder = tmp / "atlases"
    folder.mkdir(exist_ok=True)
    image = nib.load(source)
    affine = image.affine.copy()
    affine[:3, 3] += affine_shift
    target = folder / f"{name}_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header), target)
    shutil.copy(
        source.with_name(source.name.replace(".nii.gz", ".tsv")), folder / f"{name}_dseg.tsv"
    )
    return target


def atlas_in_colin27(root: Path, tmp: Path) -> Sequence[str]:
    return ("--atlas", str(_atlas_copy(root, tmp, "tpl-Colin27_atlas-colin")))


def atlas_far_from_bold(root: Path, tmp: Path) -> Sequence[str]:
    name = "tpl-MNI152NLin2009cAsym_atlas-far"
    return ("--atlas", str(_atlas_copy(root, tmp, name, affine_shift=1000.0)))


def remove(relative: str) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        (root / relative).unlink()

    return damage


def dangling(relative: str) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        path = root / relative
        path.unlink()
        path.symlink_to(tmp / "annex" / "objects" / path.name)

    return damage


def options(*args: str) -> Callable[[Path, Path], Sequence[str]]:
    return lambda root, tmp: args


def filter_file(text: str) -> Callable[[Path, Path], Sequence[str]]:
    def damage(root: Path, tmp: Path) -> Sequence[str]:
        path = tmp / "filter.json"
        path.write_text(text)
        return ("--bids-filter-file", str(path))

    return damage


def output_under_a_file(root: Path, tmp: Path) -> Sequence[str]:
    (tmp / "a-file").write_text("not a folder\n")
    return ()


def work_under_a_file(root: Path, tmp: Path) -> Sequence[str]:
    (tmp / "a-file").write_text("not a folder\n")
    return ("-w", str(tmp / "a-file" / "work"))


def unreadable(relative: str) -> Callable[[Path, Path], None]:
    def damage(root: Path, tmp: Path) -> None:
        (root / relative).chmod(0)

    return damage


def unwritable_output(root: Path, tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out").chmod(0o555)


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path, Path], Sequence[str] | None]
    exit_code: int
    fragments: tuple[str, ...]
    steps: str = "sync"
    label: str | None = "01"
    output: str = "out"  # relative to the test's temporary folder
    needs_non_root: bool = False


CASES: dict[str, Case] = {
    # EEG content
    "NaN samples in the EEG": Case(
        nan_samples,
        65,
        ("sub-01_task-rest_eeg.vhdr", "NaN", "F3 (10 samples, first at 20.000 s)", "channels.tsv"),
        "sync,clean",
    ),
    "infinite sample in the EEG": Case(
        inf_sample,
        65,
        ("sub-01_task-rest_eeg.vhdr", "infinite", "C4 (1 samples, first at 0.100 s)"),
        "sync,clean",
    ),
    "zero-length EEG data": Case(keep_seconds(0), 65, ("sub-01_task-rest_eeg.vhdr", "no samples")),
    "header and sidecar disagree on the sampling rate": Case(
        edit_text(f"{EEG}_eeg.vhdr", "SamplingInterval=1000", "SamplingInterval=2000"),
        65,
        ("sub-01_task-rest_eeg.json", "SamplingFrequency is 1000 Hz", "gives 500 Hz"),
    ),
    "events.tsv volume markers 300 samples from the .vmrk": Case(
        shift_events_tsv_only(300),
        65,
        ("sub-01_task-rest_eeg.vhdr", "disagree by up to 300 samples", "Regenerate events.tsv"),
    ),
    "sidecar sampling rate is a string": Case(
        edit_text(f"{EEG}_eeg.json", '"SamplingFrequency": 1000.0', '"SamplingFrequency": "1 kHz"'),
        65,
        ("sub-01_task-rest_eeg.json", "SamplingFrequency is '1 kHz', not a positive number"),
    ),
    "one-second EEG recording": Case(
        keep_seconds(1), 65, ("sub-01_task-rest_eeg.vhdr", "1.0 s", "48.0 s", "incomplete")
    ),
    "EEG shorter than the BOLD run": Case(
        keep_seconds(30), 65, ("sub-01_task-rest_eeg.vhdr", "13 ", "24 volumes", "30.0 s")
    ),
    "header declares more channels than the data hold": Case(
        extra_channel_in_header,
        65,
        ("sub-01_task-rest_eeg.eeg", "18 channels", "not a whole number", "NumberOfChannels"),
    ),
    # channels
    "unknown channel name in channels.tsv": Case(
        unknown_channel, 65, ("sub-01_task-rest_channels.tsv", "Xyz1", "Fp1")
    ),
    "duplicate channel name in the header": Case(
        duplicate_in_header, 65, ("sub-01_task-rest_eeg.vhdr", "'Fp1'", "more than once")
    ),
    "duplicate channel name in channels.tsv": Case(
        duplicate_in_channels_tsv, 65, ("sub-01_task-rest_channels.tsv", "'Fp1'", "more than once")
    ),
    # markers
    "duplicated volume marker": Case(
        duplicated_volume_marker, 65, ("sub-01_task-rest_eeg.vhdr", "duplicate marker")
    ),
    "two marker names could be the volume marker": Case(
        ambiguous_volume_markers,
        65,
        ("sub-01_task-rest_eeg.vhdr", "Stimulus/S128' x24", "--volume-marker"),
    ),
    "--skip-markers skips every marker": Case(
        options("--skip-markers", "30"), 65, ("sub-01_task-rest_eeg.vhdr", "--skip-markers 30")
    ),
    # BOLD
    "corrupt NIfTI header (negative dimension)": Case(
        edit_nifti_header(42, "<h", -5), 65, ("sub-01_task-rest_bold.nii.gz", "-5", "corrupt")
    ),
    "corrupt NIfTI header (magic)": Case(
        edit_nifti_header(344, "4s", b"xx1\0"), 65, ("sub-01_task-rest_bold.nii.gz", "cannot read")
    ),
    "NIfTI data offset past the end of the file": Case(
        edit_nifti_header(108, "<f", 1e9), 65, ("sub-01_task-rest_bold.nii.gz", "truncated")
    ),
    "no RepetitionTime": Case(
        edit_bold_sidecar(RepetitionTime=None),
        65,
        ("sub-01_task-rest_bold.nii.gz", "no RepetitionTime"),
    ),
    "RepetitionTime as a string": Case(
        edit_bold_sidecar(RepetitionTime="2.0"),
        65,
        ("sub-01_task-rest_bold.json", "RepetitionTime must be a JSON number", "'2.0' (str)"),
    ),
    "RepetitionTime in milliseconds": Case(
        edit_bold_sidecar(RepetitionTime=2000),
        65,
        ("sub-01_task-rest_bold.json", "looks like milliseconds", '"RepetitionTime": 2'),
    ),
    "SliceTiming of the wrong length": Case(
        edit_bold_sidecar(SliceTiming=[0.0, 0.5, 1.0]),
        65,
        ("sub-01_task-rest_bold.json", "SliceTiming has 3 values", "slices along k"),
    ),
    "SliceTiming with NaN and strings": Case(
        edit_bold_sidecar(SliceTiming=[0.0, float("nan"), "0.5"]),
        65,
        ("sub-01_task-rest_bold.json", "SliceTiming must be a list of numbers"),
    ),
    "SliceTiming beyond RepetitionTime": Case(
        edit_bold_sidecar(SliceTiming=[0.0, 1.0, 2.5]),
        65,
        ("sub-01_task-rest_bold.json", "SliceTiming", "2.5"),
    ),
    # atlas and space
    "atlas in another template space": Case(
        atlas_in_colin27, 65, ("tpl-Colin27_atlas-colin_dseg.nii.gz", "'Colin27'"), "targets"
    ),
    "atlas and BOLD do not overlap": Case(
        atlas_far_from_bold, 65, ("atlas-far_dseg.nii.gz", "not in the same space"), "targets"
    ),
    "raw BOLD not in MNI space": Case(
        bold_in_scanner_space,
        66,
        ("sub-01_task-rest_bold.nii.gz", "not in MNI space", "--output-spaces"),
        "targets",
    ),
    # missing, dangling and unreadable inputs
    "missing EEG data file": Case(
        remove(f"{EEG}_eeg.eeg"), 66, ("sub-01_task-rest_eeg.eeg", "does not exist")
    ),
    "dangling symlink to the EEG data": Case(
        dangling(f"{EEG}_eeg.eeg"), 66, ("sub-01_task-rest_eeg.eeg", "symbolic link", "datalad get")
    ),
    "dangling symlink to the BOLD run": Case(
        dangling(BOLD), 66, ("sub-01_task-rest_bold.nii.gz", "symbolic link")
    ),
    "unreadable EEG data (chmod 000)": Case(
        unreadable(f"{EEG}_eeg.eeg"),
        66,
        ("sub-01_task-rest_eeg.eeg", "permission denied"),
        needs_non_root=True,
    ),
    "unreadable BOLD (chmod 000)": Case(
        unreadable(BOLD),
        66,
        ("sub-01_task-rest_bold.nii.gz", "permission denied"),
        needs_non_root=True,
    ),
    # selection and options
    "participant not found": Case(options(), 18, ("sub-09 not found", "sub-01"), label="09"),
    "task not found": Case(options("--task", "nback"), 18, ("task-nback", "task-rest")),
    "label with path traversal": Case(options(), 2, ("'../x'", "letters and digits"), label="../x"),
    "label with an absolute path": Case(
        options(), 2, ("'/etc'", "letters and digits"), label="/etc"
    ),
    "--bids-filter-file is not JSON": Case(
        filter_file('{"eeg": {"task": "rest"},}'), 2, ("filter.json", "not valid JSON")
    ),
    "--bids-filter-file is not an object": Case(
        filter_file('["eeg"]'), 2, ("filter.json", "JSON object")
    ),
    "--bids-filter-file entry is not an object": Case(
        filter_file('{"eeg": "rest"}'), 2, ("filter.json", "'eeg'")
    ),
    "--bids-filter-file does not exist": Case(
        lambda root, tmp: ("--bids-filter-file", str(tmp / "absent.json")),
        2,
        ("absent.json", "cannot read the BIDS filter file"),
    ),
    "--bids-filter-file selects nothing": Case(
        filter_file('{"eeg": {"acquisition": "hd"}}'), 18, ("acquisition", "no EEG recording")
    ),
    # outputs
    "output folder under a regular file": Case(
        output_under_a_file,
        73,
        ("a-file/out", "cannot create the output folder"),
        output="a-file/out",
    ),
    "work folder under a regular file": Case(
        work_under_a_file, 73, ("a-file/work", "-w/--work-dir")
    ),
    "output folder not writable (chmod 555)": Case(
        unwritable_output, 73, ("out", "not writable"), needs_non_root=True
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_message_and_exit_code(
    name: str, dataset_copy: Path, tmp_path: Path
) -> None:
    case = CASES[name]
    if case.needs_non_root and IS_ROOT:
        pytest.skip("root ignores file permissions")
    extra = case.damage(dataset_copy, tmp_path) or ()
    before = tree_digest(dataset_copy)
    out = tmp_path / case.output
    label = ("--participant-label", case.label) if case.label else ()

    try:
        result = run_cli(
            dataset_copy,
            out,
            "participant",
            "-w",
            tmp_path / "w",
            "--skip-bids-validation",
            "--steps",
            case.steps,
            *label,
            *(atlas_args(dataset_copy) if "targets" in case.steps else ()),
            *extra,
        )
    finally:
        if case.needs_non_root:  # give pytest back what it must delete
            for path in (dataset_copy / f"{EEG}_eeg.eeg", dataset_copy / BOLD, tmp_path / "out"):
                if path.exists():
                    path.chmod(path.stat().st_mode | 0o700)

    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output, result.output
    message = result.output[result.output.find("error:") :]
    assert "error:" in result.output
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    after = tree_digest(dataset_copy)
    if case.needs_non_root:  # the test itself restored the permission bits
        after = {k: v[0] for k, v in after.items()}
        before = {k: v[0] for k, v in before.items()}
    assert after == before, "the input dataset was modified"
    if out.is_dir():
        result_of = {
            "sync": "*_desc-sync_events.*",
            "clean": "*_desc-clean_*",
            "targets": "*_bold*",
        }
        last = case.steps.split(",")[-1]
        assert not list(out.rglob(result_of[last])), f"a {last} result was written"
        assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_the_catalogue_is_large() -> None:
    """Issue 8 asks for 30+ bad-input cases with their message and exit code."""
    from .test_bad_inputs import CASES as FIRST

    assert len(CASES) + len(FIRST) >= 30
    assert {c.exit_code for c in CASES.values()} <= {int(code) for code in ExitCode}


# --------------------------------------------------------------------------- warnings, not errors


def test_no_ecg_channel_is_a_warning_and_the_eeg_gives_the_heartbeats(
    dataset_copy: Path, tmp_path: Path
) -> None:
    both(
        edit_text(f"{EEG}_eeg.vhdr", "Ch17=ECG,", "Ch17=AUX,"),
        edit_text(f"{EEG}_channels.tsv", "ECG\tECG", "AUX\tMISC"),
    )(dataset_copy, tmp_path)
    before = tree_digest(dataset_copy)
    out = tmp_path / "out"

    result = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync,clean",
        "--participant-label",
        "01",
    )

    assert result.exit_code == 0, result.output
    log = next((out / "logs").glob("bids-neurobolt-*.log")).read_text()
    assert "WARNING" in log and "no ECG channel" in log
    caught = json.loads((out / "logs" / "warnings" / "sub-01_task-rest.json").read_text())
    assert any("no ECG channel" in line and "from the EEG" in line for line in caught), caught
    quality = json.loads(next(out.rglob("sub-01_*_desc-clean_quality.json")).read_text())
    assert quality["bcg"]["cardiac_reference"] == "eeg"
    assert quality["bcg"]["ecg_problem"] == "no ECG channel"
    assert tree_digest(dataset_copy) == before


# --------------------------------------------------------------------------- symlinks


def test_dataset_of_symlinks_is_processed_and_left_untouched(
    small_dataset: Path, tmp_path: Path
) -> None:
    """A DataLad/git-annex-like dataset: every file is a link into another folder."""
    links = tmp_path / "linked"
    for path in small_dataset.rglob("*"):
        if path.is_file():
            target = links / path.relative_to(small_dataset)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    before = tree_digest(small_dataset)
    out = tmp_path / "out"

    result = run_cli(
        links,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync",
        "--participant-label",
        "01",
    )

    assert result.exit_code == 0, result.output
    table = pd.read_csv(next(out.rglob("sub-01_*_desc-sync_events.tsv")), sep="\t")
    assert (table.trial_type == "volume").sum() == 24
    assert tree_digest(small_dataset) == before
    assert all(p.is_symlink() for p in links.rglob("*") if not p.is_dir())


# --------------------------------------------------------------------------- disk full


def test_disk_full_gives_a_clear_message_and_no_half_written_file(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while the synchronisation table is being flushed to disk."""
    real_fsync = os.fsync
    hits: list[str] = []

    def fsync(fd: int) -> None:
        target = str(Path(f"/proc/self/fd/{fd}").readlink())
        if "desc-sync_events.tsv" in target:
            hits.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to recognise the file being written")
    monkeypatch.setattr(os, "fsync", fsync)
    before = tree_digest(dataset_copy)
    out = tmp_path / "out"

    result = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync",
        "--participant-label",
        "01",
    )

    assert hits, "the table was never written"
    assert result.exit_code == 74, result.output
    message = result.output[result.output.find("error:") :]
    assert "sub-01_task-rest_desc-sync_events.tsv" in message
    assert "no space left" in message
    assert "Traceback" not in result.output
    assert not list(out.rglob("*desc-sync_events*")), "a half-written result was left"
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    assert tree_digest(dataset_copy) == before

    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: a rerun completes
    rerun = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync",
        "--participant-label",
        "01",
    )
    assert rerun.exit_code == 0, rerun.output
    assert list(out.rglob("*desc-sync_events.tsv"))


# --------------------------------------------------------------------------- model checkpoints


class _Payload:
    """Pickles to a call of ``open(path, "w")``: creates a file if it is ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _saved_model(tmp_path: Path, seed: int = 0) -> Path:
    from bids_neurobolt.model import NeuroBOLT, NeuroBOLTConfig
    from bids_neurobolt.model.weights import ModelMetadata, save_model

    model = NeuroBOLT(["Fp1", "Cz", "O2"], 2, config=NeuroBOLTConfig.sloppy(), seed=seed)
    meta = ModelMetadata.for_model(model, ["Thalamus", "Putamen"], atlas="simulated")
    weights, _ = save_model(model, tmp_path / "sub-01_model", meta)
    return weights


def pickle_payload(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    import torch

    from bids_neurobolt.model.weights import read_labram_state

    path = tmp_path / "labram-base.pth"
    torch.save(
        {"model": {"cls_token": torch.zeros(1, 1, 200)}, "x": _Payload(tmp_path / "pwn")}, path
    )
    return path, lambda: read_labram_state(path)


def truncated_pth(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    import torch

    from bids_neurobolt.model.weights import read_labram_state

    path = tmp_path / "labram-base.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 200)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    return path, lambda: read_labram_state(path)


def other_architecture(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    """Weights and description of one configuration, the description edited to another."""
    from bids_neurobolt.model.weights import load_model

    weights = _saved_model(tmp_path)
    description = weights.with_suffix(".json")
    meta = json.loads(description.read_text())
    meta["model_config"]["depth"] = meta["model_config"]["depth"] + 2
    description.write_text(json.dumps(meta))
    return weights, lambda: load_model(weights)


def weights_of_another_model(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from bids_neurobolt.model.weights import load_model

    weights = _saved_model(tmp_path)
    (tmp_path / "other").mkdir()
    other = _saved_model(tmp_path / "other", seed=1)
    other.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
    return other, lambda: load_model(other)


def pickle_as_safetensors(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    import torch

    from bids_neurobolt.model.weights import load_model

    weights = _saved_model(tmp_path)
    torch.save({"x": _Payload(tmp_path / "pwn")}, weights)
    description = weights.with_suffix(".json")
    meta = json.loads(description.read_text())
    meta["weights_sha256"] = ""
    description.write_text(json.dumps(meta))
    return weights, lambda: load_model(weights)


def model_needs_other_channels(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from bids_neurobolt.model.weights import check_compatible, load_model

    weights = _saved_model(tmp_path)
    _, meta = load_model(weights)
    return weights, lambda: check_compatible(meta, ch_names=["Fp1", "Cz", "T7"], sfreq=200.0)


def model_at_another_rate(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from bids_neurobolt.model.weights import check_compatible, load_model

    weights = _saved_model(tmp_path)
    _, meta = load_model(weights)
    return weights, lambda: check_compatible(meta, ch_names=["Fp1", "Cz", "O2"], sfreq=250.0)


def model_without_description(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    from bids_neurobolt.model.weights import load_model

    weights = _saved_model(tmp_path)
    weights.with_suffix(".json").unlink()
    return weights, lambda: load_model(weights)


MODEL_CASES: dict[
    str, tuple[Callable[[Path], tuple[Path, Callable[[], object]]], type, tuple[str, ...]]
] = {
    ".pth with a pickle payload": (pickle_payload, DataError, ("labram-base.pth", "refused")),
    "truncated .pth": (truncated_pth, DataError, ("labram-base.pth", "cannot read")),
    "safetensors of another configuration": (
        other_architecture,
        DataError,
        ("sub-01_model.safetensors", "do not match the architecture"),
    ),
    "weights of another model (checksum)": (
        weights_of_another_model,
        DataError,
        ("sub-01_model.safetensors", "checksum"),
    ),
    "pickle in place of safetensors": (
        pickle_as_safetensors,
        DataError,
        ("sub-01_model.safetensors", "safetensors"),
    ),
    "model trained on other channels": (
        model_needs_other_channels,
        DataError,
        ("channels the data lack: O2",),
    ),
    "model at another sampling rate": (model_at_another_rate, DataError, ("250", "200")),
    "model without its description": (
        model_without_description,
        MissingInputError,
        ("sub-01_model.json",),
    ),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_bad_model_file_is_refused_clearly(name: str, tmp_path: Path) -> None:
    make, expected, fragments = MODEL_CASES[name]
    path, call = make(tmp_path)
    before = path.read_bytes()

    with pytest.raises(expected) as info:
        call()

    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.exit_code in (ExitCode.DATAERR, ExitCode.NOINPUT)
    assert info.value.exit_code == (66 if expected is MissingInputError else 65)
    assert not (tmp_path / "pwn").exists(), "a pickle payload was executed"
    assert path.read_bytes() == before, "the model file was modified"
