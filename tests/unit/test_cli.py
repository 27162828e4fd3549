"""Command-line parsing: the BIDS-Apps contract, merged configuration, exit codes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from bids_neurobolt import __version__, workflow
from bids_neurobolt.cli import cli, expand_multi_value
from bids_neurobolt.config import DEFAULT_VOLUME_MARKERS, CleanConfig, Config
from bids_neurobolt.errors import ExitCode


@pytest.fixture
def captured(monkeypatch):
    """Replace the workflow by a recorder of the Config it receives."""
    seen: list[Config] = []
    monkeypatch.setattr(workflow, "participant", lambda config: seen.append(config))
    monkeypatch.setattr(workflow, "group", lambda config: seen.append(config))
    return seen


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"bids-neurobolt {__version__}"


def test_help_documents_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    for code in ("16", "17", "18", "65", "66", "73", "74"):
        assert f"  {code}  " in result.output


@pytest.mark.parametrize(
    "labels",
    [
        ["--participant-label", "01", "02"],
        ["--participant-label", "sub-01", "sub-02"],
        ["--participant_label", "01", "--participant_label", "sub-02"],
        ["--participant-label=01", "02"],
    ],
)
def test_participant_labels_several_values_after_one_flag(captured, tmp_path, labels):
    result = invoke(
        str(tmp_path / "bids"),
        str(tmp_path / "out"),
        "participant",
        *labels,
        "-w",
        str(tmp_path / "work"),
    )
    assert result.exit_code == 0, result.output
    config = captured[0]
    assert config.selection.participant_label == ("01", "02")
    assert config.execution.analysis_level == "participant"
    assert config.inputs.bids_dir == tmp_path / "bids"


def test_labels_from_a_file(captured, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("sub-03\n04\n\n")
    result = invoke(
        str(tmp_path), str(tmp_path / "out"), "participant", "--participant-label", str(labels)
    )
    assert result.exit_code == 0, result.output
    assert captured[0].selection.participant_label == ("03", "04")


def test_options_reach_the_config(captured, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"eeg": {"acquisition": "hd"}, "bold": {"echo": None}}))
    result = invoke(
        str(tmp_path),
        str(tmp_path / "out"),
        "participant",
        "--session-label",
        "ses-1",
        "2",
        "--task",
        "rest",
        "--volume-marker",
        "R149",
        "Response/R149",
        "--skip-markers",
        "5",
        "--bids-filter-file",
        str(filters),
        "--nprocs",
        "3",
        "--omp-nthreads",
        "2",
        "--precision",
        "bf16",
        "--device",
        "cpu",
        "--random-seed",
        "42",
        "--on-error",
        "continue",
        "--skip_bids_validator",
        "-vv",
        "-q",
        "--steps",
        "sync",
        "--gradient-removal",
        "off",
        "--bcg-removal",
        "on",
        "--aas-window",
        "40",
        "--obs-components",
        "0",
        "--bcg-components",
        "3",
        "--per-roi",
    )
    assert result.exit_code == 0, result.output
    c = captured[0]
    assert c.science.per_roi is True
    assert c.science.digest("model") != dataclasses.replace(c.science, per_roi=False).digest(
        "model"
    )
    assert c.science.clean == CleanConfig(
        gradient="off", bcg="on", aas_window=40, obs_components=0, bcg_components=3
    )
    assert c.selection.session_label == ("1", "2")
    assert c.selection.task == ("rest",)
    assert c.selection.bids_filters == {"eeg": {"acquisition": "hd"}, "bold": {"echo": None}}
    assert c.science.sync.volume_markers == ("R149", "Response/R149")
    assert c.science.sync.skip_markers == 5
    assert c.science.random_seed == 42
    assert (c.execution.nprocs, c.execution.device, c.execution.on_error) == (3, "cpu", "continue")
    assert (c.execution.omp_nthreads, c.execution.threads) == (2, 2)
    assert c.execution.precision == "bf16"
    assert c.execution.skip_bids_validation is True
    assert c.execution.verbosity == 1
    assert c.execution.steps == ("sync",)
    assert c.execution.command_line[0] == "bids-neurobolt"


def test_defaults(captured, tmp_path):
    assert invoke(str(tmp_path), str(tmp_path / "o"), "group").exit_code == 0
    c = captured[0]
    assert c.science.sync.volume_markers == DEFAULT_VOLUME_MARKERS
    assert c.execution.analysis_level == "group"
    assert c.execution.on_error == "abort"
    assert c.selection.participant_label == ()


def test_config_file_is_merged_and_the_command_line_wins(captured, tmp_path):
    toml = tmp_path / "cfg.toml"
    toml.write_text(
        "[science]\nrandom_seed = 7\n[science.sync]\nskip_markers = 2\n"
        'volume_markers = ["TR"]\n[execution]\nnprocs = 4\n'
    )
    result = invoke(
        str(tmp_path),
        str(tmp_path / "o"),
        "participant",
        "--config-file",
        str(toml),
        "--nprocs",
        "2",
    )
    assert result.exit_code == 0, result.output
    c = captured[0]
    assert c.science.random_seed == 7
    assert c.science.sync.skip_markers == 2
    assert c.science.sync.volume_markers == ("TR",)
    assert c.execution.nprocs == 2


def test_config_snapshot_round_trips(captured, tmp_path):
    assert (
        invoke(
            str(tmp_path),
            str(tmp_path / "o"),
            "participant",
            "--participant-label",
            "01",
            "--skip-markers",
            "3",
        ).exit_code
        == 0
    )
    snapshot = tmp_path / "snap.toml"
    snapshot.write_text(captured[0].to_toml())
    assert (
        invoke(
            str(tmp_path), str(tmp_path / "o"), "participant", "--config-file", str(snapshot)
        ).exit_code
        == 0
    )
    first, second = captured
    assert second.science == first.science
    assert second.selection == first.selection


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["grp"], ExitCode.UNKNOWN_LEVEL, "unknown analysis level 'grp'"),
        (["participant", "--participant-label", "../01"], ExitCode.USAGE, "not a valid BIDS label"),
        (["participant", "--steps", "sync,dance"], ExitCode.USAGE, "unknown stage(s) dance"),
        (["participant", "--nprocs", "-1"], ExitCode.USAGE, "-1 is not in the range"),
        (["participant", "--device", "tpu"], ExitCode.USAGE, "'tpu' is not one of"),
        (["participant", "--bogus"], ExitCode.USAGE, "No such option '--bogus'"),
    ],
)
def test_usage_errors(captured, tmp_path, args, code, fragment):
    result = CliRunner().invoke(cli, [str(tmp_path), str(tmp_path / "o"), *args])
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert not captured


def test_invalid_filter_file_json(captured, tmp_path):
    bad = tmp_path / "filters.json"
    bad.write_text("{'eeg': }")
    result = CliRunner().invoke(
        cli, [str(tmp_path), str(tmp_path / "o"), "participant", "--bids-filter-file", str(bad)]
    )
    assert result.exit_code == ExitCode.USAGE
    assert "filters.json: is not valid JSON" in result.output
    assert not captured


def test_unknown_config_key_suggests_the_right_one(captured, tmp_path):
    toml = tmp_path / "cfg.toml"
    toml.write_text("[science.sync]\nskip_marker = 2\n")
    result = CliRunner().invoke(
        cli, [str(tmp_path), str(tmp_path / "o"), "participant", "--config-file", str(toml)]
    )
    assert result.exit_code == ExitCode.USAGE
    assert "Did you mean 'science.sync.skip_markers'?" in result.output


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a", "--rois", "x", "y", "-v"], ["a", "--rois", "x", "--rois", "y", "-v"]),
        (["--task", "a", "--", "--rois", "b"], ["--task", "a", "--", "--rois", "b"]),
        (["--device", "cpu", "x"], ["--device", "cpu", "x"]),
    ],
)
def test_expand_multi_value(argv, expected):
    assert expand_multi_value(argv) == expected


def test_pretrained_name_is_resolved_from_the_cache(captured, tmp_path):
    cache = tmp_path / "cache"
    args = [str(tmp_path), str(tmp_path / "o"), "participant", "--atlas-cache", str(cache)]
    result = CliRunner().invoke(cli, [*args, "--pretrained", "labram-base"])
    assert result.exit_code == ExitCode.NOINPUT, result.output
    assert "weights/labram-base.pth" in result.output
    assert f"bids-neurobolt-fetch --weights labram-base --cache-dir {cache}" in result.output
    assert not captured
    weights = cache / "weights" / "labram-base.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"fetched earlier")
    assert invoke(*args, "--pretrained", "labram-base").exit_code == 0
    assert captured[-1].inputs.pretrained == weights
    own = tmp_path / "mine.pth"
    assert invoke(*args, "--pretrained", str(own)).exit_code == 0
    assert captured[-1].inputs.pretrained == own  # a path stays a path
