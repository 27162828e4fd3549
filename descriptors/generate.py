"""Write the Boutiques descriptor ``descriptors/bids-neurobolt.json`` from the click command.

Run ``python descriptors/generate.py`` after changing the command line:
``tests/unit/test_descriptor.py`` fails when the committed descriptor differs from what
this script writes, or when an option of ``bids-neurobolt`` has no input (and vice versa).

Each option of the click command becomes one input: its id is the click parameter name,
its flag the first long flag, its description the option's help. Types follow the click
types (``Choice`` -> ``value-choices``, ``IntRange`` -> integer ``Number`` with bounds,
``Path`` -> ``File``, flags -> ``Flag``, counts -> ``-v``/``-vv`` choices, ``multiple`` ->
list). What click cannot say is in the tables below: the BIDS-App positionals with the ids
CBRAIN expects (``bids_dir``, ``output_dir_name``, ``participant_level_analysis_dir``,
``analysis_level``; output ``output_dir``), options given as comma lists
(:data:`COMMA_LISTS`), writable paths (:data:`WRITABLE`), groups, resources and the
CBRAIN integration. A new option lands in the group "More options" until it is listed in
:data:`GROUPS`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from bids_neurobolt import __version__
from bids_neurobolt.cli import EXIT_CODES_HELP, cli
from bids_neurobolt.config import ANALYSIS_LEVELS, STEPS
from bids_neurobolt.docker import DEFAULT_IMAGE

TARGET = Path(__file__).resolve().with_name("bids-neurobolt.json")

#: Options that are not processing options.
EXCLUDED_OPTIONS: frozenset[str] = frozenset({"help", "version"})

#: Options whose value is one string of comma-separated choices: id -> choices.
COMMA_LISTS: dict[str, tuple[str, ...]] = {"steps": STEPS}

#: Path options that name a location the app writes to (a String, not an input File).
WRITABLE: frozenset[str] = frozenset({"work_dir"})

#: How many repetitions a count option (``-v``, ``-q``) offers.
MAX_COUNT = 2

#: Input groups shown by CBRAIN and other Boutiques front ends: (id, name, members).
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "selection",
        "Selection",
        ("participant_label", "session_label", "task", "bids_filter_file"),
    ),
    (
        "inputs",
        "Other inputs",
        ("fmriprep_dir", "targets_dir", "atlas", "rois", "model", "pretrained", "config_file"),
    ),
    ("markers", "Scanner markers", ("volume_marker", "slice_marker", "skip_markers")),
    ("stages", "Stages", ("steps", "sloppy", "random_seed")),
    (
        "execution",
        "Execution",
        ("work_dir", "nprocs", "device", "on_error", "skip_bids_validation", "verbose", "quiet"),
    ),
)

DESCRIPTION = (
    "BIDS App for EEG-to-fMRI synthesis from simultaneous EEG-fMRI: synchronises EEG with "
    "the BOLD volumes, removes MR gradient and ballistocardiogram artifacts, extracts atlas "
    "ROI BOLD targets, and trains or applies the NeuroBOLT model (Li et al. 2024), writing "
    "BIDS derivatives. The participant level processes each selected participant; the "
    "group level reads only the output folder. A GPU is used when the container can see "
    "one (Docker: --gpus all; Singularity/Apptainer: --nv)."
)

POSITIONAL_INPUTS: list[dict[str, Any]] = [
    {
        "id": "bids_dir",
        "name": "BIDS dataset",
        "type": "File",
        "description": "The raw BIDS dataset of simultaneous EEG-fMRI (read only, never "
        "written to).",
        "value-key": "[BIDS_DIR]",
        "optional": False,
    },
    {
        "id": "output_dir_name",
        "name": "Output folder name",
        "type": "String",
        "description": "Folder that receives the derivative dataset; for the group level, "
        "the folder that holds the participant-level results.",
        "value-key": "[OUTPUT_DIR]",
        "optional": True,
    },
    {
        "id": "participant_level_analysis_dir",
        "name": "Participant-level results",
        "type": "File",
        "description": "Output folder of the participant level, for the group level (CBRAIN "
        "file selection). bosh 0.5.33 substitutes [OUTPUT_DIR] from the first of the two "
        "output inputs only, so with bosh give the participant-level folder as "
        "output_dir_name instead.",
        "value-key": "[OUTPUT_DIR]",
        "optional": True,
    },
    {
        "id": "analysis_level",
        "name": "Analysis level",
        "type": "String",
        "description": "'participant': per-participant processing (several participant jobs "
        "may share one output folder); 'group': across participants, from the output "
        "folder only.",
        "value-key": "[ANALYSIS_LEVEL]",
        "optional": False,
        "value-choices": list(ANALYSIS_LEVELS),
        "value-disables": {"participant": ["participant_level_analysis_dir"], "group": []},
    },
]

OUTPUT_FILES: list[dict[str, Any]] = [
    {
        "id": "output_dir",
        "name": "Output folder",
        "description": "The BIDS derivative dataset: cleaned EEG, ROI BOLD targets, "
        "predicted ROI BOLD, metrics, models, reports and logs.",
        "path-template": "[OUTPUT_DIR]",
        "optional": False,
    }
]

SUGGESTED_RESOURCES: dict[str, Any] = {
    "cpu-cores": 4,
    "ram": 16,
    "disk-space": 20,
    "walltime-estimate": 14400,
    "gpu-cores": 1,
}

CUSTOM: dict[str, Any] = {
    "BIDSApplicationVersion": "2.0",
    "cbrain:readonly-input-files": True,
    "cbrain:integrator_modules": {
        "BoutiquesBidsSingleSubjectMaker": {
            "dataset_input_id": "bids_dir",
            "subjects_input_id": "participant_label",
            "keep_sub_prefix": False,
        },
        "BoutiquesPostProcessingCleaner": ["work"],
    },
}

#: Examples run by ``bosh test`` inside the container: (name, invocation, exit code).
#: The participant test expects the dataset written by
#: ``bids-neurobolt-simulate sim --subjects 1 --duration 30 --sfreq 1000``.
TESTS: tuple[tuple[str, dict[str, Any], int], ...] = (
    (
        "participant-sloppy-simulated",
        {
            "bids_dir": "sim",
            "output_dir_name": "out",
            "analysis_level": "participant",
            "participant_label": ["01"],
            "sloppy": True,
            "device": "cpu",
            "work_dir": "work",
        },
        0,
    ),
    (
        "missing-dataset-exits-66",
        {"bids_dir": "no-such-dataset", "output_dir_name": "out", "analysis_level": "participant"},
        66,
    ),
)


def _human(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _flag(param: click.Option) -> str:
    """Return the first long flag (``--participant-label``), else the first flag."""
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _default(value: Any) -> Any:
    """Return the default to state in the description, or None when there is none.

    Defaults are stated, not set as ``default-value``: Boutiques would render them on
    the command line, where they would override a ``--config-file``.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, tuple | list) and value:
        return [str(v) for v in value]
    return None


def option_input(param: click.Option) -> dict[str, Any]:
    """Build the Boutiques input of one click option."""
    name = param.name or ""
    entry: dict[str, Any] = {
        "id": name,
        "name": _human(name),
        "type": "String",
        "description": " ".join((param.help or _human(name)).split()),
        "value-key": f"[{name.upper()}]",
        "optional": True,
    }
    short = next((opt for opt in param.opts if not opt.startswith("--")), None)
    if param.count:
        entry["value-choices"] = [
            "-" + short[1:] * n if short else " ".join([_flag(param)] * n)
            for n in range(1, MAX_COUNT + 1)
        ]
        return entry
    entry["command-line-flag"] = _flag(param)
    if param.is_flag:
        entry["type"] = "Flag"
        return entry
    kind = param.type
    if name in COMMA_LISTS:
        entry.update(
            {
                "type": "String",
                "list": True,
                "list-separator": ",",
                "value-choices": list(COMMA_LISTS[name]),
            }
        )
    elif isinstance(kind, click.Choice):
        entry["type"] = "String"
        entry["value-choices"] = [str(choice) for choice in kind.choices]
    elif isinstance(kind, click.IntRange | click.FloatRange) or kind in (click.INT, click.FLOAT):
        entry["type"] = "Number"
        entry["integer"] = isinstance(kind, click.IntRange) or kind is click.INT
        if isinstance(kind, click.IntRange | click.FloatRange):
            for bound, key, open_ in (
                (kind.min, "minimum", kind.min_open),
                (kind.max, "maximum", kind.max_open),
            ):
                if bound is not None:
                    entry[key] = bound
                    if open_:
                        entry[f"exclusive-{key}"] = True
    elif isinstance(kind, click.Path) and name not in WRITABLE:
        entry["type"] = "File"
    if param.multiple:
        entry["list"] = True
    default = _default(param.default)
    if default is not None and "default:" not in entry["description"].lower():
        shown = ", ".join(default) if isinstance(default, list) else default
        entry["description"] += f" Default: {shown}."
    return entry


def processing_options(command: click.Command = cli) -> list[click.Option]:
    """Return the click options that become descriptor inputs, in command order."""
    return [
        p
        for p in command.params
        if isinstance(p, click.Option) and p.name is not None and p.name not in EXCLUDED_OPTIONS
    ]


def error_codes() -> list[dict[str, Any]]:
    """Parse the exit codes documented in the command's help into Boutiques error codes."""
    codes = []
    for line in EXIT_CODES_HELP.splitlines():
        match = re.match(r"^\s+(\d+)\s+(.+)$", line)
        if match and int(match.group(1)) != 0:
            codes.append({"code": int(match.group(1)), "description": match.group(2).strip()})
    return codes


def build() -> dict[str, Any]:
    """Return the descriptor as a dict."""
    options = [option_input(p) for p in processing_options()]
    ids = [entry["id"] for entry in options]
    first = ["participant_label", "session_label"]
    keys = [f"[{name.upper()}]" for name in first] + [
        entry["value-key"] for entry in options if entry["id"] not in first
    ]
    command_line = (
        "mkdir -p [OUTPUT_DIR]; bids-neurobolt [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] "
        + " ".join(keys)
    )
    listed = {member for _, _, members in GROUPS for member in members}
    groups: list[dict[str, Any]] = [
        {
            "id": "output_folder",
            "name": "Output folder",
            "description": "A new output folder name for the participant level; the "
            "participant-level results for the group level.",
            "members": ["output_dir_name", "participant_level_analysis_dir"],
            "mutually-exclusive": True,
            "one-is-required": True,
        }
    ]
    for group_id, name, members in GROUPS:
        present = [m for m in members if m in ids]
        if present:
            groups.append({"id": group_id, "name": name, "members": present})
    unlisted = [i for i in ids if i not in listed]
    if unlisted:
        groups.append({"id": "more_options", "name": "More options", "members": unlisted})
    return {
        "name": "bids-neurobolt",
        "tool-version": __version__,
        "schema-version": "0.5",
        "description": DESCRIPTION,
        "author": "bids-neurobolt developers",
        "url": "https://github.com/bids-neurobolt/bids-neurobolt",
        "command-line": command_line,
        "container-image": {"type": "docker", "image": DEFAULT_IMAGE},
        "inputs": POSITIONAL_INPUTS + options,
        "groups": groups,
        "output-files": OUTPUT_FILES,
        "error-codes": error_codes(),
        "suggested-resources": SUGGESTED_RESOURCES,
        "tags": {
            "application-type": ["bids"],
            "domain": ["neuroinformatics", "eeg", "fmri", "eeg-fmri", "deep-learning"],
        },
        "tests": [
            {"name": name, "invocation": invocation, "assertions": {"exit-code": code}}
            for name, invocation, code in TESTS
        ],
        "custom": CUSTOM,
    }


def render() -> str:
    """Return the descriptor as formatted JSON text."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the descriptor, or with ``--check`` report whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python descriptors/generate.py")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
