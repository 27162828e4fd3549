"""Configuration: validation, hashing, TOML round trip."""

from __future__ import annotations

import tomllib

import pytest

from bids_neurobolt.config import (
    CleanConfig,
    Config,
    ScienceConfig,
    Selection,
    SyncConfig,
    dump_toml,
    load_config_file,
    normalise_label,
)
from bids_neurobolt.errors import ConfigError

MINIMAL = {"inputs": {"bids_dir": "/in"}, "execution": {"output_dir": "/out"}}


def test_label_prefix_removed_without_eating_letters():
    # str.lstrip("sub-") would turn "sub-bus" into "" (mriqc#889); removeprefix does not.
    assert normalise_label("sub-bus", "sub-") == "bus"
    assert normalise_label("ubs01", "sub-") == "ubs01"


@pytest.mark.parametrize("bad", ["../01", "01/..", "sub-01_ses-1", "", "a b"])
def test_labels_reject_path_traversal_and_separators(bad):
    with pytest.raises(ConfigError, match="not a valid BIDS label"):
        Selection(participant_label=(bad,))


def test_selection_deduplicates_labels():
    assert Selection(participant_label=("01", "sub-01", "02")).participant_label == ("01", "02")


def test_science_hash_changes_with_science_only():
    base = Config.from_mapping(MINIMAL)
    other_exec = Config.from_mapping({**MINIMAL, "execution": {"output_dir": "/o", "nprocs": 8}})
    other_sync = Config.from_mapping({**MINIMAL, "science": {"sync": {"skip_markers": 1}}})
    assert base.science.digest() == other_exec.science.digest()
    assert base.science.digest() != other_sync.science.digest()
    assert len(base.science.digest()) == 16


def test_toml_round_trip(tmp_path):
    config = Config.from_mapping(
        {
            **MINIMAL,
            "selection": {"participant_label": ["01"], "bids_filters": {"bold": {"echo": 1}}},
            "science": {"random_seed": 3, "sync": {"volume_markers": ["R149"]}},
        }
    )
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    data = load_config_file(path)
    assert data["bids_neurobolt"]["science_hash"] == config.science.digest()
    assert Config.from_mapping(data) == config


def test_dump_toml_quotes_awkward_strings():
    text = dump_toml({"a": {"k": 'x"y\\z', "odd key": [1, 2.5, True]}})
    assert tomllib.loads(text) == {"a": {"k": 'x"y\\z', "odd key": [1, 2.5, True]}}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"execution": {"output_dir": "/o"}}, "Incomplete configuration"),
        ({**MINIMAL, "sience": {}}, "unknown configuration key 'sience'"),
        ({**MINIMAL, "execution": {"output_dir": "/o", "nprocs": "many"}}, "must be of type int"),
        ({**MINIMAL, "execution": {"output_dir": "/o", "device": "tpu"}}, "device must be one of"),
        ({**MINIMAL, "science": {"random_seed": -1}}, "random_seed must be in"),
        ({**MINIMAL, "science": {"sync": {"tolerance_fraction": 0.9}}}, "tolerance_fraction"),
        ({**MINIMAL, "selection": {"bids_filters": {"anat": {}}}}, "'eeg' and 'bold'"),
        ({**MINIMAL, "science": {"clean": {"gradient": "maybe"}}}, "clean.gradient must be one"),
        ({**MINIMAL, "science": {"clean": {"bcg": "yes"}}}, "clean.bcg must be one"),
        ({**MINIMAL, "science": {"clean": {"aas_window": 1}}}, "aas_window must be 0"),
        ({**MINIMAL, "science": {"clean": {"bcg_components": 0}}}, "bcg_components in"),
        ({**MINIMAL, "science": {"clean": {"obs_components": -2}}}, "obs_components must be"),
        ({**MINIMAL, "science": {"clean": {"lowpass": 120.0}}}, "highpass < lowpass <= 100"),
        ({**MINIMAL, "science": {"clean": {"highpass": 30.0, "lowpass": 20.0}}}, "highpass <"),
        ({**MINIMAL, "science": {"clean": {"window": 3}}}, "unknown configuration key"),
    ],
)
def test_invalid_configurations(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config.from_mapping(data)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[science\n")
    with pytest.raises(ConfigError, match=r"bad.toml: is not valid TOML"):
        load_config_file(path)


def test_defaults_are_valid():
    assert SyncConfig().skip_markers == 0
    assert ScienceConfig().sync == SyncConfig()


def test_clean_settings_change_the_clean_and_model_hashes_only():
    base = ScienceConfig()
    changed = ScienceConfig(clean=CleanConfig(bcg_components=3))
    assert base.digest("clean") != changed.digest("clean")
    assert base.digest("model") != changed.digest("model")
    assert base.digest("sync") == changed.digest("sync")
    assert base.digest("targets") == changed.digest("targets")


def test_thread_limits_default_to_the_cpus_and_never_exceed_nprocs():
    import os

    from bids_neurobolt.config import ExecutionConfig

    cpus = len(os.sched_getaffinity(0))
    assert ExecutionConfig(output_dir="/o").threads == cpus
    assert ExecutionConfig(output_dir="/o", nprocs=1, omp_nthreads=8).threads == 1
    assert ExecutionConfig(output_dir="/o", nprocs=8, omp_nthreads=3).threads == 3
    with pytest.raises(ConfigError, match="must be >= 0"):
        ExecutionConfig(output_dir="/o", omp_nthreads=-1)


def test_the_workflow_applies_the_thread_limit():
    import torch

    from bids_neurobolt.workflow import thread_limits

    config = Config.from_mapping({**MINIMAL, "execution": {"output_dir": "/o", "nprocs": 1}})
    before = torch.get_num_threads()
    with thread_limits(config) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
