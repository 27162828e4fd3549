"""The one place that sequences stages: participant and group levels.

Participant level, for each selected EEG recording (a :class:`~bids_neurobolt.bids.layout.RunSpec`):

``sync``
    find the volume markers, check them against the BOLD run and write the
    per-volume synchronisation table (``desc-sync_events.tsv``).

``clean``
    remove the MR gradient and ballistocardiogram artifacts from the EEG, filter and
    resample it to the model rate and write ``desc-clean_eeg.vhdr`` with its sidecars,
    quality metrics and report figures.

``targets``
    extract, clean and scale the ROI BOLD targets of runs with BOLD and write
    ``desc-bold_timeseries.tsv``.

``model``
    train NeuroBOLT on each run with BOLD (intra-scan split) with a ridge baseline, or
    apply ``--model`` to every run (EEG-only ones included), and write the predicted
    ROI BOLD (``desc-neurobolt_timeseries.tsv``), metrics and the trained model.

``report``
    after the runs, write ``sub-<label>.html`` for every selected participant from
    what the stages left in the output folder.

A run whose outputs exist with
the same science-configuration hash is skipped; ``--on-error continue`` processes every
run and reports the failures at the end.

Group level reads only the output folder: NeuroBOLT is trained and tested across
subjects (:mod:`bids_neurobolt.stages.group`) and ``group.html`` summarises every run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_neurobolt import __version__
from bids_neurobolt.bids import validation
from bids_neurobolt.bids.layout import RunSpec, discover_runs, load_layout
from bids_neurobolt.config import STEPS, Config
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.errors import (
    ConfigError,
    MissingInputError,
    NeuroboltError,
    OutputError,
    RunsFailedError,
    StageNotAvailableError,
)
from bids_neurobolt.log import capture_warnings, log_file, timed
from bids_neurobolt.report.html import write_group_report, write_participant_report
from bids_neurobolt.stages import clean as clean_stage
from bids_neurobolt.stages import group as group_stage
from bids_neurobolt.stages import model as model_stage
from bids_neurobolt.stages import sync as sync_stage
from bids_neurobolt.stages import targets as targets_stage
from bids_neurobolt.stages.context import RunContext, StageResult

logger = logging.getLogger(__name__)

#: Stages this version provides.
AVAILABLE_STEPS: tuple[str, ...] = ("sync", "clean", "targets", "model", "report")

#: Per-run stages, in the order they run.
RUN_STAGES: dict[str, Callable[[RunContext], StageResult]] = {
    "sync": sync_stage.run,
    "clean": clean_stage.run,
    "targets": targets_stage.run,
    "model": model_stage.run,
}

#: The ``desc-`` labels each stage writes (explained in ``descriptions.tsv``).
_DESC_LABELS: dict[str, tuple[str, ...]] = {
    "sync": ("sync",),
    "clean": ("clean",),
    "targets": ("bold",),
    "model": ("neurobolt", "neuroboltpsc"),
}


@dataclass
class RunOutcome:
    """What happened to one run."""

    spec: RunSpec
    status: str  # "done" or "failed"
    detail: str = ""
    stages: dict[str, StageResult] = field(default_factory=dict)


@dataclass
class Summary:
    """What an invocation did."""

    run_id: str
    outcomes: list[RunOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Return the number of runs with this status."""
        return sum(o.status == status for o in self.outcomes)


@contextlib.contextmanager
def thread_limits(config: Config) -> Iterator[int]:
    """Limit the threads of PyTorch and of the BLAS/OpenMP pools to ``--omp-nthreads``.

    Yields
    ------
    int
        The limit applied.
    """
    import torch

    threads = config.execution.threads
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn (nilearn)
        limiter: Any = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=threads)
    try:
        with limiter:
            yield threads
    finally:
        torch.set_num_threads(previous)


def participant(config: Config) -> Summary:
    """Run the participant level.

    Parameters
    ----------
    config : Config
        The invocation's configuration.

    Returns
    -------
    Summary
        One outcome per run.

    Raises
    ------
    NeuroboltError
        The first failure under ``--on-error abort``; :class:`RunsFailedError` listing
        every failure under ``--on-error continue``.
    """
    steps = resolve_steps(config)
    bids_dir, output_dir, work_dir = check_locations(config)
    run_id = new_run_id()
    _make_dir(output_dir)
    summary = Summary(run_id=run_id)
    with log_file(output_dir / "logs" / f"bids-neurobolt-{run_id}.log"):
        logger.info("bids-neurobolt %s, participant level, run %s", __version__, run_id)
        logger.info("input: %s | output: %s | work: %s", bids_dir, output_dir, work_dir)
        writer.write_text(output_dir / "logs" / f"config-{run_id}.toml", config.to_toml())
        for stale in writer.remove_stale_temporaries(output_dir):
            logger.info("removed %s, left by an interrupted run.", stale)
        for stale in writer.remove_abandoned_folders(work_dir):
            logger.info("removed %s, the work folder of a run that was killed.", stale)
        db_dir = work_dir / run_id / "bids_db"
        writer.claim_folder(work_dir / run_id)
        try:
            with timed(logger, "input indexed"):
                layout = load_layout(bids_dir, db_dir)
                runs = discover_runs(layout, config.selection)
            if "targets" in steps and any(spec.bold is not None for spec in runs):
                targets_stage.preflight(config)
            if "model" in steps:
                model_stage.preflight(config)
            if config.execution.skip_bids_validation:
                logger.info("BIDS validation skipped (--skip-bids-validation).")
            else:
                with timed(logger, "input validated with bids-validator-deno"):
                    errors = validation.validate_dataset(
                        bids_dir, sorted({r.subject for r in runs})
                    )
                validation.raise_for_errors(bids_dir, errors)
            n_bold = sum(r.bold is not None for r in runs)
            logger.info(
                "%d EEG recording(s) selected: %d with BOLD, %d EEG-only.",
                len(runs),
                n_bold,
                len(runs) - n_bold,
            )
            writer.write_dataset_files(
                output_dir,
                bids_dir,
                _description(layout),
                tuple(label for s in steps for label in _DESC_LABELS.get(s, ())),
            )
            with thread_limits(config) as threads:
                logger.debug("numerical libraries limited to %d thread(s)", threads)
                for spec in runs:
                    ctx = RunContext(spec, layout, config, bids_dir, output_dir, work_dir / run_id)
                    summary.outcomes.append(_run_one(ctx, steps))
            if "report" in steps:
                for subject in sorted({spec.subject for spec in runs}):
                    with timed(logger, f"sub-{subject}: report"):
                        write_participant_report(output_dir, subject)
        finally:
            shutil.rmtree(work_dir / run_id, ignore_errors=True)
        _report(summary)
    return summary


def group(config: Config) -> Summary:
    """Run the group level (reads only the output folder).

    Trains and evaluates NeuroBOLT across subjects (see :mod:`bids_neurobolt.stages.group`)
    and writes ``group.html``. The window cache lives in ``<work>/group`` and is kept, so
    a rerun with other training settings does not cut the windows again.

    Raises
    ------
    MissingInputError
        If the output folder holds no participant-level results, or fewer than two
        participants with cleaned EEG and targets.
    """
    output_dir = config.execution.output_dir.expanduser().resolve()
    tables = (
        sorted(output_dir.glob("sub-*/**/*_desc-sync_events.tsv")) if output_dir.is_dir() else []
    )
    if not tables:
        raise MissingInputError(
            "holds no participant-level results.",
            path=output_dir,
            fix="Run the participant level into this folder first: "
            "bids-neurobolt BIDS_DIR OUTPUT_DIR participant.",
        )
    work_dir = (config.execution.work_dir or Path.cwd() / "work").expanduser().resolve()
    run_id = new_run_id()
    from bids_neurobolt.train.distributed import init_distributed, shutdown

    parallel = init_distributed()  # under torchrun: one process per GPU, rank 0 writes
    if parallel is not None and parallel.rank > 0:
        try:
            group_stage.run_group(config, work_dir / "group", device=parallel.device)
        finally:
            shutdown()
        return Summary(run_id=run_id)
    try:
        with log_file(output_dir / "logs" / f"bids-neurobolt-group-{run_id}.log"):
            logger.info("bids-neurobolt %s, group level, run %s", __version__, run_id)
            if parallel is not None:
                logger.info(
                    "data-parallel training: %d processes (%s backend, torchrun)",
                    parallel.world_size,
                    parallel.backend,
                )
            writer.write_text(output_dir / "logs" / f"config-group-{run_id}.toml", config.to_toml())
            with timed(logger, "group level: NeuroBOLT across subjects"), thread_limits(config):
                group_stage.run_group(
                    config, work_dir / "group", device=None if parallel is None else parallel.device
                )
            with timed(logger, "group report"):
                write_group_report(output_dir)
    finally:
        shutdown()
    return Summary(run_id=run_id)


def resolve_steps(config: Config) -> tuple[str, ...]:
    """Return the stages to run, refusing those this version does not provide.

    Raises
    ------
    StageNotAvailableError
        If ``--steps`` names an unavailable stage.
    ConfigError
        If ``--model`` or ``--pretrained`` is given without the model stage, or both are.
    """
    requested = config.execution.steps or AVAILABLE_STEPS
    missing = [s for s in requested if s not in AVAILABLE_STEPS]
    if missing:
        raise StageNotAvailableError(
            f"the stage(s) {', '.join(missing)} are not part of bids-neurobolt {__version__} "
            f"yet; this version provides: {', '.join(AVAILABLE_STEPS)}.",
            fix=f"Run with --steps {','.join(AVAILABLE_STEPS)} (the default).",
        )
    for attr, flag in (("model", "--model"), ("pretrained", "--pretrained")):
        if getattr(config.inputs, attr) is not None and "model" not in requested:
            raise ConfigError(
                f"{flag} feeds the 'model' stage, which --steps leaves out.",
                fix=f"Add 'model' to --steps, or leave out {flag}.",
            )
    if config.inputs.model is not None and config.inputs.pretrained is not None:
        raise ConfigError(
            "--model applies a trained model and --pretrained starts a new training from "
            "LaBraM weights; give one of them.",
            fix="Leave out --pretrained to apply --model, or --model to train.",
        )
    return tuple(s for s in STEPS if s in requested)


def check_locations(config: Config) -> tuple[Path, Path, Path]:
    """Resolve the input, output and work folders and enforce the house rules.

    The output may not be the input dataset nor lie inside it, except under its
    ``derivatives/`` folder; the work folder may not lie inside the input dataset.

    Returns
    -------
    tuple of Path
        ``(bids_dir, output_dir, work_dir)``, absolute.

    Raises
    ------
    MissingInputError
        If the input dataset folder does not exist.
    ConfigError
        If the output or work folder breaks the rules above.
    """
    bids_dir = config.inputs.bids_dir.expanduser().resolve()
    if not bids_dir.is_dir():
        raise MissingInputError(
            "the BIDS dataset folder does not exist.",
            path=config.inputs.bids_dir,
            fix="Check the path; in a container, check the -v/-B mount of the dataset.",
        )
    output_dir = config.execution.output_dir.expanduser().resolve()
    work_dir = (config.execution.work_dir or Path.cwd() / "work").expanduser().resolve()
    if output_dir == bids_dir:
        raise ConfigError(
            "the output folder is the input dataset; bids-neurobolt never writes into its input.",
            path=output_dir,
            fix=f"Use e.g. {bids_dir / 'derivatives' / 'bids-neurobolt'} as OUTPUT_DIR.",
        )
    if output_dir.is_relative_to(bids_dir) and not output_dir.is_relative_to(
        bids_dir / "derivatives"
    ):
        raise ConfigError(
            "the output folder lies inside the input dataset.",
            path=output_dir,
            fix=f"Write outside the dataset, or under {bids_dir / 'derivatives'}.",
        )
    if work_dir.is_relative_to(bids_dir):
        raise ConfigError(
            "the work folder lies inside the input dataset.",
            path=work_dir,
            fix="Pass -w/--work-dir with a folder outside the dataset (e.g. on scratch).",
        )
    return bids_dir, output_dir, work_dir


def new_run_id() -> str:
    """Return a unique, sortable identifier for one invocation."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- per run


def _run_one(ctx: RunContext, steps: Iterable[str]) -> RunOutcome:
    outcome = RunOutcome(ctx.spec, "done")
    with capture_warnings() as caught:
        try:
            for step in steps:
                if step in RUN_STAGES:
                    outcome.stages[step] = _stage(ctx, step)
        except NeuroboltError as exc:
            if ctx.config.execution.on_error == "abort":
                raise
            logger.error("%s failed: %s", ctx.spec.label, exc.message)
            outcome.status, outcome.detail = "failed", exc.message
    if any(r.status == "done" for r in outcome.stages.values()) or outcome.status == "failed":
        writer.write_json(naming.warnings_path(ctx.output_dir, ctx.spec.label), caught)
    return outcome


def _stage(ctx: RunContext, step: str) -> StageResult:
    start = time.perf_counter()
    result = RUN_STAGES[step](ctx)
    elapsed = time.perf_counter() - start
    if result.status == "done":
        logger.info("%s: %s (%.1f s)", ctx.spec.label, step, elapsed)
    elif result.status == "skipped":
        logger.info("%s: %s up to date, skipped.", ctx.spec.label, step)
    else:
        logger.info("%s: %s not applicable (%s).", ctx.spec.label, step, result.detail)
    return result


# --------------------------------------------------------------------------- helpers


def _report(summary: Summary) -> None:
    parts = []
    for step in RUN_STAGES:
        counts = Counter(o.stages[step].status for o in summary.outcomes if step in o.stages)
        if counts:
            parts.append(
                f"{step} {counts['done']} done, {counts['skipped']} up to date, "
                f"{counts['not applicable']} not applicable"
            )
    failed = summary.count("failed")
    logger.info(
        "finished %d run(s): %s; %d failed.",
        len(summary.outcomes),
        "; ".join(parts) or "no stage ran",
        failed,
    )
    if failed:
        lines = "; ".join(
            f"{o.spec.label}: {o.detail}" for o in summary.outcomes if o.status == "failed"
        )
        raise RunsFailedError(
            f"{failed} of {len(summary.outcomes)} run(s) failed: {lines}",
            fix="Fix the inputs named above and run again; finished runs are reused.",
        )


def _description(layout: Any) -> dict[str, Any]:
    path = Path(layout.root) / "dataset_description.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder ({exc.strerror}).",
            path=path,
            fix="Choose a folder you can write to.",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(
            "the output folder is not writable.",
            path=path,
            fix="Fix its permissions or choose another folder (in a container, "
            "check that the output mount is not read-only).",
        )
