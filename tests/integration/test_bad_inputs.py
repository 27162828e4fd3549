"""Bad inputs at participant level: a clear message, a documented exit code, input untouched.

Each case damages a private copy of the simulated dataset, runs the command line, and checks
the exit code, fragments of the message (the file, the problem, the fix) and that the input
tree is byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from .conftest import atlas_args, run_cli, tree_digest

EEG = "sub-01/eeg/sub-01_task-rest"
BOLD = "sub-01/func/sub-01_task-rest_bold.nii.gz"


def edit_volume_markers(root: Path, edit: Callable[[np.ndarray], np.ndarray | None]) -> None:
    """Apply ``edit`` to sub-01's volume-marker samples in events.tsv and the .vmrk alike.

    ``edit`` receives the zero-based samples and returns the new ones (``None`` drops them all).
    """
    events_path = root / f"{EEG}_events.tsv"
    events = pd.read_csv(events_path, sep="\t", dtype={"value": str})
    is_volume = events["trial_type"] == "Response/R128"
    new = edit(events.loc[is_volume, "sample"].to_numpy())
    others = events[~is_volume]
    if new is not None:
        first = events[is_volume].iloc[0]
        sfreq = float(first["sample"]) / float(first["onset"])
        rows = pd.DataFrame(
            {
                "onset": np.round(new / sfreq, 6),
                "duration": 0,
                "trial_type": "Response/R128",
                "value": "R128",
                "sample": new,
            }
        )
        others = pd.concat([others, rows]).sort_values("sample", kind="stable")
    others.to_csv(events_path, sep="\t", index=False)

    vmrk_path = root / f"{EEG}_eeg.vmrk"
    text = vmrk_path.read_text()
    head, _, _ = text.partition("Mk1=")
    lines = [ln for ln in text[len(head) :].splitlines() if ln and "Response,R128" not in ln]
    markers = [ln.split("=", 1)[1] for ln in lines]
    if new is not None:
        markers += [f"Response,R128,{s + 1},1,0" for s in new]
    markers.sort(key=lambda m: int(m.split(",")[2]))
    body = "".join(f"Mk{i}={m}\n" for i, m in enumerate(markers, start=1))
    vmrk_path.write_text(head + body)


def drop_all_markers(root: Path) -> None:
    edit_volume_markers(root, lambda s: None)
    # Slice markers alone cannot stand in for volume markers either.
    events_path = root / f"{EEG}_events.tsv"
    events = pd.read_csv(events_path, sep="\t")
    events.iloc[:0].to_csv(events_path, sep="\t", index=False)
    vmrk_path = root / f"{EEG}_eeg.vmrk"
    vmrk_path.write_text(re.sub(r"Mk\d+=Comment,Slice,.*\n", "", vmrk_path.read_text()))


def drop_last_three(root: Path) -> None:
    edit_volume_markers(root, lambda s: s[:-3])


def add_two_extra(root: Path) -> None:
    edit_volume_markers(root, lambda s: np.concatenate([s, s[-1] + np.diff(s)[:2].cumsum()]))


def irregular_spacing(root: Path) -> None:
    def shift(samples: np.ndarray) -> np.ndarray:
        samples = samples.copy()
        samples[5:] += 700  # a 0.7 s jump at 1 kHz: one gap of 2.7 s instead of 2.0 s
        samples[-1] -= 700 + 350
        return samples

    edit_volume_markers(root, shift)


def wrong_tr(root: Path) -> None:
    path = root / "sub-01/func/sub-01_task-rest_bold.json"
    path.write_text(path.read_text().replace('"RepetitionTime": 2.0', '"RepetitionTime": 2.5'))


def corrupt_eeg_header(root: Path) -> None:
    (root / f"{EEG}_eeg.vhdr").write_text("this is not a BrainVision header\n")


def truncated_eeg_data(root: Path) -> None:
    path = root / f"{EEG}_eeg.eeg"
    path.write_bytes(path.read_bytes()[:1000])


def unreadable_bold(root: Path) -> None:
    path = root / BOLD
    path.write_bytes(path.read_bytes()[:200])


def not_gzip_bold(root: Path) -> None:
    (root / BOLD).write_bytes(b"\x00" * 4096)


def three_d_bold(root: Path) -> None:
    path = root / BOLD
    image = nib.load(path)
    volume = np.asarray(image.dataobj[..., 0])
    nib.save(nib.Nifti1Image(volume, image.affine, image.header), path)


def empty_gzip_bold(root: Path) -> None:
    with gzip.open(root / BOLD, "wb"):
        pass


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], None]
    exit_code: int
    fragments: tuple[str, ...]
    extra_args: tuple[str, ...] = ()


CASES = {
    "no volume markers": Case(drop_all_markers, 65, ("sub-01_task-rest_eeg", "--volume-marker")),
    "three volume markers missing": Case(drop_last_three, 65, ("21", "24", "volume")),
    "two volume markers too many": Case(add_two_extra, 65, ("26", "24", "--skip-markers")),
    "irregular marker spacing": Case(irregular_spacing, 65, ("sub-01_task-rest_eeg", "2.7")),
    "RepetitionTime disagrees with markers": Case(wrong_tr, 65, ("2.5", "2.0")),
    "corrupt EEG header": Case(corrupt_eeg_header, 65, ("sub-01_task-rest_eeg.vhdr",)),
    "truncated EEG data": Case(truncated_eeg_data, 65, ("sub-01_task-rest_eeg",)),
    "unreadable BOLD": Case(unreadable_bold, 65, ("sub-01_task-rest_bold.nii.gz",)),
    "BOLD is not gzip": Case(not_gzip_bold, 65, ("sub-01_task-rest_bold.nii.gz",)),
    "empty BOLD": Case(empty_gzip_bold, 65, ("sub-01_task-rest_bold.nii.gz",)),
    "3-D BOLD": Case(three_d_bold, 65, ("sub-01_task-rest_bold.nii.gz", "4-D")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_message_and_exit_code(
    name: str, dataset_copy: Path, tmp_path: Path
) -> None:
    case = CASES[name]
    case.damage(dataset_copy)
    before = tree_digest(dataset_copy)
    out = tmp_path / "out"

    result = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--participant-label",
        "01",
        "--skip-bids-validation",
        "--steps",
        "sync",
        *atlas_args(dataset_copy),
        *case.extra_args,
    )

    assert result.exit_code == case.exit_code, result.output
    message = result.output[result.output.find("error:") :]
    assert "error:" in result.output
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in result.output
    assert tree_digest(dataset_copy) == before, "the input dataset was modified"
    assert not list(out.glob("sub-01/eeg/*_desc-sync_events.tsv")), "a result was written"
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_unknown_participant_is_a_selection_error(small_dataset: Path, tmp_path: Path) -> None:
    result = run_cli(small_dataset, tmp_path / "out", "participant", "--participant-label", "09")
    assert result.exit_code == 18
    assert "09" in result.output and "01" in result.output  # names what exists


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_inside_input_is_refused(small_dataset: Path, where: str) -> None:
    before = tree_digest(small_dataset)
    out = small_dataset if where == "same" else small_dataset / "neurobolt"

    result = run_cli(small_dataset, out, "participant")

    assert result.exit_code == 2
    assert "derivatives" in result.output
    assert not (small_dataset / "neurobolt").exists()
    assert tree_digest(small_dataset) == before


def test_on_error_continue_processes_the_other_runs(dataset_copy: Path, tmp_path: Path) -> None:
    drop_last_three(dataset_copy)
    out = tmp_path / "out"

    result = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--on-error",
        "continue",
        "--steps",
        "sync",
        *atlas_args(dataset_copy),
    )

    assert result.exit_code == 1, result.output
    assert "sub-01_task-rest" in result.output
    assert list((out / "sub-02" / "eeg").glob("*_desc-sync_events.tsv"))
    assert not (out / "sub-01").exists()


def test_skip_markers_fixes_leading_dummy_markers(dataset_copy: Path, tmp_path: Path) -> None:
    def prepend_two(samples: np.ndarray) -> np.ndarray:
        step = samples[1] - samples[0]
        return np.concatenate([samples[0] - step * np.array([2, 1]), samples])

    edit_volume_markers(dataset_copy, prepend_two)
    out = tmp_path / "out"
    common = (
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync",
        *atlas_args(dataset_copy),
    )

    assert run_cli(*common, "--participant-label", "01").exit_code == 65
    result = run_cli(*common, "--participant-label", "01", "--skip-markers", "2")

    assert result.exit_code == 0, result.output
    table = pd.read_csv(next(out.rglob("sub-01_*_desc-sync_events.tsv")), sep="\t")
    assert (table.trial_type == "volume").sum() == 24


def test_atlas_not_cached_fails_before_any_run(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", tmp_path / "w", "--atlas-cache", tmp_path / "c"
    )
    assert result.exit_code == 66
    assert "bids-neurobolt-fetch --atlas difumo64" in result.output
    assert str(tmp_path / "c") in result.output
    assert not (out / "dataset_description.json").exists(), "results written before the check"
    assert not list(out.glob("sub-*"))
