"""The Boutiques descriptor: valid, complete, in step with the click command, usable by CBRAIN.

``bosh validate --bids`` on the descriptor; ``bosh exec simulate`` on each example
invocation and each descriptor test; the rendered command line is parsed by the click
command (no execution) and turned into a Config. A change to the command line without
``python descriptors/generate.py`` fails here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shlex
from pathlib import Path

import click
import pytest

from bids_neurobolt import __version__
from bids_neurobolt.cli import build_config, cli
from bids_neurobolt.config import ANALYSIS_LEVELS, STEPS
from bids_neurobolt.docker import DEFAULT_IMAGE
from bids_neurobolt.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "descriptors" / "bids-neurobolt.json"
EXAMPLES = sorted((ROOT / "descriptors" / "examples").glob("*.json"))

#: Click options that are not processing options, hence not in the descriptor.
NOT_IN_DESCRIPTOR = {"help", "version"}


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "descriptor_generate", ROOT / "descriptors" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inputs(descriptor) -> dict[str, dict]:
    return {entry["id"]: entry for entry in descriptor["inputs"]}


def processing_options() -> list[click.Option]:
    return [
        p
        for p in cli.params
        if isinstance(p, click.Option) and p.name and p.name not in NOT_IN_DESCRIPTOR
    ]


def test_descriptor_is_up_to_date_with_the_cli():
    committed = DESCRIPTOR.read_text(encoding="utf-8")
    assert committed == _load_generator().render(), (
        "descriptors/bids-neurobolt.json is stale: run `python descriptors/generate.py`"
    )


def test_every_cli_option_has_an_input_and_every_flag_is_a_cli_option(inputs):
    options = {p.name: p for p in processing_options()}
    positional = {"bids_dir", "output_dir_name", "participant_level_analysis_dir", "analysis_level"}
    missing = sorted(set(options) - set(inputs))
    extra = sorted(set(inputs) - positional - set(options))
    assert not missing and not extra, (
        f"run descriptors/generate.py: missing {missing}, extra {extra}"
    )
    for name, param in options.items():
        entry = inputs[name]
        if param.count:
            short = next(o for o in param.opts if not o.startswith("--"))
            assert entry["value-choices"][0] == short, name
            assert all(set(c[1:]) == {short[1]} for c in entry["value-choices"]), name
            assert "command-line-flag" not in entry
        else:
            assert entry["command-line-flag"] in param.opts, name


def test_input_types_follow_the_click_types(inputs):
    generator = _load_generator()
    for param in processing_options():
        entry = inputs[param.name]
        kind = param.type
        assert entry["optional"] is True, param.name
        assert "default-value" not in entry, "defaults would override --config-file"
        if param.is_flag:
            assert entry["type"] == "Flag", param.name
        elif param.count:
            assert entry["type"] == "String", param.name
        elif isinstance(kind, click.Choice):
            assert entry["value-choices"] == list(kind.choices), param.name
        elif isinstance(kind, click.IntRange):
            assert entry["type"] == "Number" and entry["integer"] is True, param.name
            assert entry.get("minimum") == kind.min, param.name
            assert entry.get("maximum") == kind.max, param.name
        elif isinstance(kind, click.Path):
            expected = "String" if param.name in generator.WRITABLE else "File"
            assert entry["type"] == expected, param.name
        assert entry.get("list", False) == (param.multiple or param.name in generator.COMMA_LISTS)
    assert inputs["steps"]["value-choices"] == list(STEPS)
    assert inputs["steps"]["list-separator"] == ","
    assert inputs["analysis_level"]["value-choices"] == list(ANALYSIS_LEVELS)


def test_each_value_key_appears_once_in_the_command_line(descriptor):
    command_line = descriptor["command-line"]
    keys = {entry["value-key"] for entry in descriptor["inputs"]}
    for key in keys - {"[OUTPUT_DIR]"}:
        assert command_line.count(key) == 1, key
    assert command_line.count("[OUTPUT_DIR]") == 2  # mkdir -p [OUTPUT_DIR]; ... [OUTPUT_DIR]


def test_ids_and_modules_cbrain_expects(descriptor, inputs):
    assert inputs["bids_dir"]["type"] == "File"
    assert inputs["output_dir_name"]["type"] == "String"
    assert inputs["participant_label"]["list"] is True
    assert inputs["analysis_level"]["value-choices"] == ["participant", "group"]
    assert [o["id"] for o in descriptor["output-files"]] == ["output_dir"]
    modules = descriptor["custom"]["cbrain:integrator_modules"]
    maker = modules["BoutiquesBidsSingleSubjectMaker"]
    assert maker["dataset_input_id"] in inputs
    assert maker["subjects_input_id"] in inputs
    assert maker["keep_sub_prefix"] is False
    assert descriptor["custom"]["cbrain:readonly-input-files"] is True
    resources = descriptor["suggested-resources"]
    assert resources["gpu-cores"] >= 1 and resources["ram"] >= 8
    assert resources["walltime-estimate"] > 0 and resources["cpu-cores"] >= 1


def test_version_image_and_exit_codes(descriptor):
    assert descriptor["tool-version"] == __version__
    assert descriptor["schema-version"] == "0.5"
    assert descriptor["container-image"] == {"type": "docker", "image": DEFAULT_IMAGE}
    codes = {e["code"] for e in descriptor["error-codes"]}
    assert codes == {int(c) for c in ExitCode if c != ExitCode.OK}


def test_every_input_is_in_a_group(descriptor, inputs):
    members = [m for group in descriptor["groups"] for m in group["members"]]
    assert sorted(members) == sorted(set(inputs) - {"bids_dir", "analysis_level"})


# ---------------------------------------------------------------------- bosh
@pytest.fixture(scope="module")
def bosh():
    """Run ``bosh`` in-process with its chatter silenced; skip when boutiques is absent."""
    pytest.importorskip(
        "boutiques", reason="boutiques (bosh) is not installed: pip install boutiques"
    )
    from boutiques.bosh import bosh as run

    def _run(*args: str):
        with contextlib.redirect_stdout(io.StringIO()):
            return run(list(args))

    return _run


def test_bosh_validate_bids(bosh):
    bosh("validate", "--bids", str(DESCRIPTOR))  # raises when invalid


def test_bosh_rejects_a_broken_descriptor(bosh, tmp_path, descriptor):
    broken = {k: v for k, v in descriptor.items() if k != "schema-version"}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(Exception, match="schema-version"):
        bosh("validate", "--bids", str(path))


def simulate(bosh, invocation: dict, tmp_path: Path) -> str:
    """Render an invocation with ``bosh exec simulate`` and return the command line."""
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    return bosh("exec", "simulate", str(DESCRIPTOR), "-i", str(path)).shell_command


def parse_rendered(command: str) -> click.Context:
    """Parse a rendered command line with the click command, without running it."""
    prefix, _, rest = command.partition(";")
    assert prefix.startswith("mkdir -p ")
    argv = shlex.split(rest)
    assert argv[0] == "bids-neurobolt"
    ctx = cli.make_context("bids-neurobolt", argv[1:])
    assert shlex.split(prefix)[2:] == [str(ctx.params["output_dir"])]
    return ctx


def _invocations() -> dict[str, dict]:
    cases = {f"example:{p.name}": json.loads(p.read_text()) for p in EXAMPLES}
    for test in json.loads(DESCRIPTOR.read_text(encoding="utf-8"))["tests"]:
        cases[f"test:{test['name']}"] = test["invocation"]
    return cases


def test_examples_exist():
    assert {"participant", "group"} <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("case", sorted(_invocations()))
def test_simulated_command_line_parses_with_the_cli(bosh, case, tmp_path):
    invocation = _invocations()[case]
    ctx = parse_rendered(simulate(bosh, invocation, tmp_path))
    params = ctx.params
    assert str(params["bids_dir"]) == invocation["bids_dir"]
    out = invocation.get("output_dir_name") or invocation.get("participant_level_analysis_dir")
    assert str(params["output_dir"]) == out
    # Every value given in the invocation reaches the click parameter of the same id.
    for key, value in invocation.items():
        if key in {"bids_dir", "output_dir_name", "participant_level_analysis_dir"}:
            continue
        got = params[key]
        if key == "steps":
            assert got == ",".join(value)
        elif key in {"verbose", "quiet"}:
            assert got == len(value) - 1
        elif isinstance(value, list):
            assert list(got) == value, key
        elif isinstance(got, Path):
            assert str(got) == value, key
        else:
            assert got == value, key
    # And the whole command line makes a valid configuration.
    if params.get("config_file") is None and params.get("bids_filter_file") is None:
        config = build_config(ctx, params)
        assert config.execution.analysis_level == invocation["analysis_level"]


def test_lists_render_as_several_values_after_one_flag(bosh, tmp_path):
    invocation = {
        "bids_dir": "/d",
        "output_dir_name": "/o",
        "analysis_level": "participant",
        "participant_label": ["01", "02", "sub-03"],
        "rois": ["Left_Putamen", "Heschl's gyrus"],
    }
    command = simulate(bosh, invocation, tmp_path)
    assert "--participant-label 01 02 sub-03" in command
    ctx = parse_rendered(command)
    assert ctx.params["participant_label"] == ("01", "02", "sub-03")
    assert ctx.params["rois"] == ("Left_Putamen", "Heschl's gyrus")


def test_bosh_refuses_values_outside_the_choices(bosh, tmp_path):
    invocation = {
        "bids_dir": "/d",
        "output_dir_name": "/o",
        "analysis_level": "participant",
        "steps": ["sync", "bogus"],
    }
    with pytest.raises(Exception, match="bogus"):
        simulate(bosh, invocation, tmp_path)
