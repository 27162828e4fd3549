"""Derivative file names and atomic writers."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.errors import ExitCode, IOFailure, OutputError


def test_bids_name_orders_entities_and_skips_missing():
    name = naming.bids_name(
        {"desc": "sync", "run": "01", "subject": "01", "session": None, "task": "rest"},
        "events",
        ".tsv",
    )
    assert name == "sub-01_task-rest_run-01_desc-sync_events.tsv"


def test_bids_name_rejects_unknown_entities():
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        naming.bids_name({"subject": "01", "colour": "red"}, "eeg", ".vhdr")


def test_sync_table_path_with_session():
    path = naming.sync_table_path(
        Path("/out"),
        {"subject": "01", "session": "2", "task": "rest", "acquisition": None, "run": None},
    )
    assert path == Path("/out/sub-01/ses-2/eeg/sub-01_ses-2_task-rest_desc-sync_events.tsv")
    assert naming.sidecar_path(path) == path.with_suffix(".json")
    assert naming.sidecar_path(Path("/a/x_bold.nii.gz")) == Path("/a/x_bold.json")


def test_write_tsv_uses_bids_conventions(tmp_path):
    path = writer.write_tsv(
        tmp_path / "a" / "t.tsv", pd.DataFrame({"x": [1.5, None], "y": ["a", "b"]})
    )
    assert path.read_text() == "x\ty\n1.5\ta\nn/a\tb\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.tsv"]  # no temporary left


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError), writer.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_rewrite(tmp_path):
    target = writer.write_json(tmp_path / "r.json", {"v": 1})
    with pytest.raises(RuntimeError), writer.atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_disk_full_is_an_io_failure(tmp_path, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "replace", no_space)
    with pytest.raises(IOFailure) as info:
        writer.write_text(tmp_path / "x.tsv", "a\n")
    assert info.value.exit_code == ExitCode.IOERR
    assert "no space left" in str(info.value) and "x.tsv" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_is_an_output_error(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputError) as info:
            writer.write_text(tmp_path / "sub" / "x.tsv", "a\n")
        assert info.value.exit_code == ExitCode.CANTCREAT
    finally:
        tmp_path.chmod(0o755)


def test_permission_error_maps_to_output_error(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "replace", denied)
    with pytest.raises(OutputError, match="Read-only file system"):
        writer.write_text(tmp_path / "x.tsv", "a\n")


def test_dataset_description_records_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv(writer.CONTAINER_ENV, "docker:bids-neurobolt:0.1.0")
    desc = writer.dataset_description(
        tmp_path, {"Name": "ds", "DatasetDOI": "10.1/x", "License": "CC0"}
    )
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids-neurobolt"
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": "bids-neurobolt:0.1.0"}
    assert desc["SourceDatasets"] == [{"DOI": "10.1/x", "URL": "https://doi.org/10.1/x"}]
    assert desc["License"] == "CC0"
    assert desc["DatasetLinks"]["raw"].startswith("file://")


def test_descriptions_tsv_keeps_earlier_labels(tmp_path):
    (tmp_path / "descriptions.tsv").write_text("desc_id\tdescription\ndesc-old\tkept\n")
    writer.write_dataset_files(tmp_path, tmp_path, {}, ("sync",))
    table = pd.read_csv(tmp_path / "descriptions.tsv", sep="\t")
    assert table["desc_id"].tolist() == ["desc-old", "desc-sync"]
    assert (tmp_path / ".bidsignore").read_text().splitlines()[0] == "logs"
