"""Command line: ``bids-neurobolt BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

This module only turns argv into a :class:`~bids_neurobolt.config.Config`, calls
:mod:`bids_neurobolt.workflow`, and turns errors into messages and exit codes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from bids_neurobolt import __version__
from bids_neurobolt.config import (
    CONFOUND_STRATEGIES,
    DEVICES,
    ON_ERROR,
    PRECISIONS,
    REMOVAL_MODES,
    SCALINGS,
    SPLITS,
    STEPS,
    Config,
    load_config_file,
)
from bids_neurobolt.errors import (
    ConfigError,
    ExitCode,
    NeuroboltError,
    Stopped,
    UnknownAnalysisLevelError,
)
from bids_neurobolt.log import setup_console

logger = logging.getLogger("bids_neurobolt.cli")

#: Options that take several values after one flag (``--participant-label 01 02``),
#: as BIDS Apps and Boutiques write them.
MULTI_VALUE_FLAGS: frozenset[str] = frozenset(
    {
        "--participant-label",
        "--participant_label",
        "--session-label",
        "--session_label",
        "--task",
        "--task-id",
        "--task_id",
        "--task-label",
        "--rois",
        "--volume-marker",
        "--slice-marker",
    }
)

EXIT_CODES_HELP = """\b
Exit codes:
   0  success
   1  some runs failed (with --on-error continue), listed at the end
   2  usage error: bad option, value or configuration file
  16  the input dataset failed BIDS validation
  17  unknown analysis level
  18  the selection (labels, filters) matched no data
  65  bad data (markers vs volumes, corrupt or inconsistent file)
  66  a required input file or folder is missing
  69  an external program failed or is missing (fmriprep-docker, Docker: --run-fmriprep)
  70  internal error (please report it)
  73  an output cannot be created (permissions)
  74  reading or writing failed (e.g. disk full)
 129  stopped by SIGHUP (temporaries removed)
 130  interrupted (Ctrl-C)
 143  stopped by SIGTERM (scancel, docker stop)
"""


def expand_multi_value(args: Sequence[str], flags: frozenset[str] = MULTI_VALUE_FLAGS) -> list[str]:
    """Rewrite ``--flag a b`` as ``--flag a --flag b`` for the multi-value flags.

    Values are taken greedily until the next token that starts with ``-``, as
    argparse's ``nargs="+"`` does; ``--`` ends option parsing.
    """
    out: list[str] = []
    current: str | None = None
    for i, token in enumerate(args):
        if token == "--":
            out.extend(args[i:])
            break
        if token.startswith("-"):
            current = token.split("=", 1)[0]
            current = current if current in flags else None
            out.append(token)
            continue
        if current is not None and out[-1] != current:
            out.append(current)
        out.append(token)
    return out


class BidsAppCommand(click.Command):
    """A click command that accepts ``--participant-label 01 02`` (several values, one flag)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Record argv for provenance, then parse it with multi-value flags expanded."""
        ctx.meta["bids_neurobolt.argv"] = list(args)
        return super().parse_args(ctx, expand_multi_value(args))


def _labels(values: Sequence[str]) -> tuple[str, ...]:
    """Expand values that name a file into the labels it lists (one per line)."""
    out: list[str] = []
    for value in values:
        path = Path(value)
        if ("/" in value or value.endswith(".txt")) and path.is_file():
            out.extend(line.strip() for line in path.read_text().splitlines() if line.strip())
        else:
            out.append(value)
    return tuple(out)


def _read_filter_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the BIDS filter file ({exc.strerror}).",
            path=path,
            fix="Check the path given to --bids-filter-file.",
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"is not valid JSON ({exc}).",
            path=path,
            fix='Write it as JSON, e.g. {"eeg": {"acquisition": "hd"}}.',
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "must hold a JSON object keyed by 'eeg' and/or 'bold'.",
            path=path,
            fix='Write it as {"eeg": {...}, "bold": {...}}.',
        )
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"the value of '{key}' must be an object of PyBIDS filters.",
                path=path,
                fix='e.g. {"bold": {"acquisition": "mb"}}.',
            )
    return data


def _split_steps(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    steps = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ConfigError(
            f"--steps: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STEPS)}."
        )
    return steps


def build_config(ctx: click.Context, params: dict[str, Any]) -> Config:
    """Merge the configuration file (if any) with the options given on the command line.

    Options given explicitly win over the file; the file wins over defaults.
    """
    data: dict[str, Any] = {}
    if params["config_file"] is not None:
        data = load_config_file(params["config_file"])

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    def put(
        section: str, key: str, value: Any, *, name: str | None = None, always: bool = False
    ) -> None:
        if always or given(name or key):
            parts = section.split(".")
            target = data
            for part in parts:
                target = target.setdefault(part, {})
            target[key] = value

    put("inputs", "bids_dir", str(params["bids_dir"]), always=True)
    put("execution", "output_dir", str(params["output_dir"]), always=True)
    put("execution", "analysis_level", params["analysis_level"], always=True)
    put(
        "execution",
        "command_line",
        ["bids-neurobolt", *ctx.meta.get("bids_neurobolt.argv", [])],
        always=True,
    )
    for key in (
        "fmriprep_dir",
        "targets_dir",
        "model",
        "pretrained",
        "atlas_cache",
        "group_split",
        "fs_license_file",
    ):
        if params[key] is not None:
            put("inputs", key, str(params[key]))
    put("selection", "participant_label", _labels(params["participant_label"]))
    put("selection", "session_label", _labels(params["session_label"]))
    put("selection", "task", params["task"])
    if params["bids_filter_file"] is not None:
        put(
            "selection",
            "bids_filters",
            _read_filter_file(params["bids_filter_file"]),
            name="bids_filter_file",
        )
    put("science", "atlas", params["atlas"])
    put("science", "rois", params["rois"])
    put("science", "confounds", params["confounds"])
    put("science", "scaling", params["scaling"])
    put("science", "random_seed", params["random_seed"])
    put("science", "sloppy", params["sloppy"])
    put("science", "folds", params["folds"])
    put("science", "split", params["split"])
    put("science", "per_roi", params["per_roi"])
    put("science", "prediction_tr", params["tr"], name="tr")
    put("science.sync", "volume_markers", params["volume_marker"], name="volume_marker")
    put("science.sync", "slice_markers", params["slice_marker"], name="slice_marker")
    put("science.sync", "skip_markers", params["skip_markers"])
    put("science.clean", "gradient", params["gradient_removal"], name="gradient_removal")
    put("science.clean", "bcg", params["bcg_removal"], name="bcg_removal")
    for key in ("aas_window", "obs_components", "bcg_components"):
        put("science.clean", key, params[key])
    if params["work_dir"] is not None:
        put("execution", "work_dir", str(params["work_dir"]))
    put("execution", "steps", _split_steps(params["steps"]))
    put("execution", "nprocs", params["nprocs"])
    put("execution", "omp_nthreads", params["omp_nthreads"])
    put("execution", "precision", params["precision"])
    put("execution", "device", params["device"])
    put("execution", "on_error", params["on_error"])
    put("execution", "skip_bids_validation", params["skip_bids_validation"])
    put("execution", "run_fmriprep", params["run_fmriprep"])
    put(
        "execution",
        "verbosity",
        params["verbose"] - params["quiet"],
        always=given("verbose") or given("quiet"),
    )
    return Config.from_mapping(data)


@click.command(
    cls=BidsAppCommand,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.argument("bids_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("output_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("analysis_level", metavar="{participant,group}")
@click.option(
    "--participant-label",
    "--participant_label",
    "participant_label",
    multiple=True,
    metavar="LABEL...",
    help="Subjects to process, with or without 'sub-' (several values after one "
    "flag, or a file with one label per line). Default: all.",
)
@click.option(
    "--session-label",
    "--session_label",
    "session_label",
    multiple=True,
    metavar="LABEL...",
    help="Sessions to process, with or without 'ses-'.",
)
@click.option(
    "--task",
    "--task-id",
    "--task_id",
    "--task-label",
    "task",
    multiple=True,
    metavar="LABEL...",
    help="Tasks to process.",
)
@click.option(
    "--bids-filter-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON file of PyBIDS filters: {"eeg": {...}, "bold": {...}}; null '
    'means "entity absent", "*" means "any value".',
)
@click.option(
    "--fmriprep-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="fMRIPrep derivatives for the ROI targets ('targets' stage).",
)
@click.option(
    "--run-fmriprep",
    is_flag=True,
    help="When a run's raw BOLD is not in MNI space and no fMRIPrep derivatives hold it, "
    "run fMRIPrep with fmriprep-docker (needs Docker and a FreeSurfer license) once per "
    "participant, into --fmriprep-dir (default: OUTPUT_DIR/sourcedata/fmriprep), and use "
    "its outputs ('targets' stage).",
)
@click.option(
    "--fs-license-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FS_LICENSE",
    show_envvar=True,
    help="FreeSurfer license file, for fMRIPrep run with --run-fmriprep. "
    "Default: $FREESURFER_HOME/license.txt.",
)
@click.option(
    "--targets-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Precomputed ROI *_timeseries.tsv tables ('targets' stage).",
)
@click.option(
    "--atlas", help="Atlas registry name, or a NIfTI path with a labels TSV ('targets' stage)."
)
@click.option(
    "--rois",
    multiple=True,
    metavar="NAME...",
    help="ROI names or the preset 'paper' ('targets' stage). Default: all.",
)
@click.option(
    "--atlas-cache",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="BIDS_NEUROBOLT_CACHE",
    show_envvar=True,
    help="Folder of atlases fetched with bids-neurobolt-fetch (runs never download). "
    "Default: $XDG_CACHE_HOME/bids-neurobolt.",
)
@click.option(
    "--confounds",
    type=click.Choice(CONFOUND_STRATEGIES),
    default="motion6",
    show_default=True,
    help="Confounds regressed from fMRIPrep BOLD before ROI extraction ('targets' stage).",
)
@click.option(
    "--scaling",
    type=click.Choice(SCALINGS),
    default="absmax",
    show_default=True,
    help="Final ROI target scaling: 'absmax' (the paper's: demean, divide by the 95th "
    "percentile of |x|, statistics from the training part), 'zscore' or 'none'.",
)
@click.option(
    "--volume-marker",
    "volume_marker",
    multiple=True,
    metavar="NAME...",
    help="Name(s) of the scanner's volume marker, e.g. 'R128' or "
    "'Response/R128'. Default: R128, S128, TR, Scanner/Scan Start and their "
    "BrainVision forms.",
)
@click.option(
    "--slice-marker",
    "slice_marker",
    multiple=True,
    metavar="NAME...",
    help="Name(s) of the slice marker. Default: Scanner/s, Slice.",
)
@click.option(
    "--skip-markers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Ignore this many leading volume markers (dummy scans the scanner "
    "triggered but did not save in the BOLD file).",
)
@click.option(
    "--gradient-removal",
    type=click.Choice(REMOVAL_MODES),
    default="auto",
    show_default=True,
    help="MR gradient artifact removal ('clean' stage); 'auto': when the run has volume "
    "markers, 'off' for EEG already corrected by the recording software.",
)
@click.option(
    "--bcg-removal",
    type=click.Choice(REMOVAL_MODES),
    default="auto",
    show_default=True,
    help="Ballistocardiogram removal ('clean' stage); 'auto': when the run has volume markers.",
)
@click.option(
    "--aas-window",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Artifacts averaged into each gradient template; 0: at least 30, spanning 4 s.",
)
@click.option(
    "--obs-components",
    type=click.IntRange(min=-1),
    default=-1,
    show_default=True,
    help="Principal components of the gradient residuals fitted per artifact (OBS); "
    "-1: chosen automatically, 0: no OBS.",
)
@click.option(
    "--bcg-components",
    type=click.IntRange(min=1, max=20),
    default=4,
    show_default=True,
    help="Principal components of the BCG fitted per heartbeat (OBS).",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Apply this trained NeuroBOLT model ('model' stage).",
)
@click.option(
    "--pretrained",
    type=click.Path(path_type=Path, dir_okay=False),
    help="LaBraM weights to start training from ('model' stage): a checkpoint (.pth), or "
    "'labram-base' for the copy fetched by 'bids-neurobolt-fetch --weights labram-base' "
    "into <cache>/weights/ (cache folder as for --atlas-cache).",
)
@click.option(
    "--tr",
    type=click.FloatRange(min=0, max=60),
    default=0.0,
    show_default=True,
    help="With --model: step (s) of the prediction grid of EEG recorded without volume "
    "markers; 0: the repetition time the model was trained at.",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="blocked-cv",
    show_default=True,
    help="Evaluation within a run ('model' stage): blocked-cv predicts every window once "
    "out of sample (5 contiguous folds with 20 s gaps; needs about 5 min of scan), then "
    "trains the saved model on every window; paper is NeuroBOLT's chronological "
    "80/10/10 split (tests on the last tenth: needs 15 min or more to be evaluable).",
)
@click.option(
    "--per-roi",
    is_flag=True,
    help="Train one NeuroBOLT per ROI, as the paper did (ROIs' models share nothing; "
    "training costs as many times as there are ROIs), instead of one model predicting "
    "every ROI.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Group level: folds of the inter-subject cross-validation (>= 3); 0: "
    "min(5, subjects), and with two subjects each tests the model trained on the other.",
)
@click.option(
    "--group-split",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Group level: JSON file {"train": [...], "val": [...], "test": [...]} of subject '
    "labels, used in place of the k-fold cross-validation.",
)
@click.option(
    "--steps",
    metavar="LIST",
    help=f"Comma-separated stages to run, among {','.join(STEPS)}. "
    "Default: every stage this version provides.",
)
@click.option(
    "-w",
    "--work-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Scratch folder (PyBIDS index, caches). Default: ./work.",
)
@click.option(
    "--nprocs",
    "--nthreads",
    "--n-cpus",
    "nprocs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Maximum CPU threads/processes; 0: every CPU this process may use.",
)
@click.option(
    "--omp-nthreads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Maximum threads per process for numerical libraries (PyTorch, BLAS); 0: --nprocs.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where the model runs. For a GPU in a container, start it with "
    "'docker run --gpus all' or 'apptainer run --nv'.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Model arithmetic: 'auto' is bf16 autocast on CUDA and float32 on the CPU "
    "(bit-reproducible); 'bf16' predicts 1.6x (AVX-512 BF16) to 2.3x (AMX) faster on the CPU.",
)
@click.option(
    "--random-seed",
    type=click.IntRange(min=0, max=2**32 - 1),
    default=0,
    show_default=True,
    help="Seed of every random number generator.",
)
@click.option(
    "--config-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration (e.g. a snapshot from logs/); options given on the command line win.",
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR),
    default="abort",
    show_default=True,
    help="Stop at the first failed run, or process the others and exit 1 with a list of failures.",
)
@click.option(
    "--skip-bids-validation",
    "--skip_bids_validation",
    "--skip_bids_validator",
    "skip_bids_validation",
    is_flag=True,
    help="Do not validate the input dataset with bids-validator-deno.",
)
@click.option("--sloppy", is_flag=True, help="Tiny model and few epochs: for tests only.")
@click.option("-v", "--verbose", count=True, help="More detail (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less output: -q warnings, -qq errors only.")
@click.version_option(
    __version__, "--version", prog_name="bids-neurobolt", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, **params: Any) -> None:
    """Synthesise fMRI from EEG: a BIDS App for simultaneous EEG-fMRI (NeuroBOLT).

    BIDS_DIR is the raw BIDS dataset (never written to). OUTPUT_DIR receives the
    derivative dataset (not inside BIDS_DIR, except under its derivatives/ folder).
    The participant level processes each selected EEG recording; the group level
    reads only OUTPUT_DIR.
    """
    from bids_neurobolt import workflow

    setup_console(params["verbose"] - params["quiet"])
    with stop_on_signals():
        _run(ctx, params, workflow)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`~bids_neurobolt.errors.Stopped` while it runs.

    SLURM (``scancel``, the time limit), Docker (``docker stop``) and CBRAIN stop jobs
    with SIGTERM; a closed terminal sends SIGHUP. Both then unwind like Ctrl-C. The
    previous handlers are restored afterwards; outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(ctx: click.Context, params: dict[str, Any], workflow: Any) -> None:
    try:
        if params["analysis_level"] not in ("participant", "group"):
            raise UnknownAnalysisLevelError(
                f"unknown analysis level {params['analysis_level']!r}.",
                fix="Use 'participant' (per-subject processing) or 'group' (across "
                "subjects, reading OUTPUT_DIR only).",
            )
        config = build_config(ctx, params)
        if config.execution.analysis_level == "participant":
            workflow.participant(config)
        else:
            workflow.group(config)
    except NeuroboltError as exc:
        logger.debug("error details:\n%s", traceback.format_exc())
        click.echo(f"bids-neurobolt: error: {exc.message}", err=True)
        ctx.exit(int(exc.exit_code))
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        click.echo(
            f"bids-neurobolt: stopped by {name}; finished outputs are kept, this run's "
            "temporaries removed.",
            err=True,
        )
        ctx.exit(128 + exc.signum)
    except KeyboardInterrupt:
        click.echo("bids-neurobolt: interrupted; finished outputs are kept.", err=True)
        ctx.exit(int(ExitCode.INTERRUPTED))
    except Exception:  # noqa: BLE001 - last-resort handler: report bugs with a traceback
        click.echo(
            "bids-neurobolt: internal error (a bug, please report it with this traceback):\n"
            + traceback.format_exc(),
            err=True,
        )
        ctx.exit(int(ExitCode.SOFTWARE))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bids-neurobolt`` console script."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="bids-neurobolt")
