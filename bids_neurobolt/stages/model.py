"""``model`` stage: train NeuroBOLT on a run (intra-scan split) or apply a trained model.

Training (no ``--model``), for a run with cleaned EEG and ROI targets:

1. windows: the 16 s of ``desc-clean`` EEG (model channels, 200 Hz) that end at each
   volume marker, paired with that volume's row of the ``desc-bold`` targets;
2. evaluation (:mod:`bids_neurobolt.train.evaluation`): by default blocked 5-fold
   cross-validation, every window predicted once by a NeuroBOLT trained on the rest of
   the run (20 s gaps), then the saved model trained on every window; with ``--split
   paper`` the paper's chronological 80/10/10 split. NeuroBOLT starts from scratch, or
   from LaBraM weights with ``--pretrained``; the HRF and FIR ridges run on the same folds;
3. ``desc-neurobolt_timeseries.tsv`` (a prediction for every volume with a full window,
   out of sample under blocked cross-validation), ``desc-neurobolt_metrics.tsv`` (per ROI
   and set: r with n_eff, CI, null and paired p-values, q-values; n/a when too short),
   ``models/<run>_atlas-<A>_desc-neurobolt_model.safetensors`` with its JSON, figures.

Applying (``--model PATH``), for any run with cleaned EEG, EEG-only runs included:
predictions at each volume marker, or on a regular grid at the model's training TR
when the recording has no markers; metrics over all volumes when the run has targets.

The timeseries sidecar is written last: with the current settings hash (and the same
pre-trained or applied model) it marks a complete result.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.errors import DataError, MissingInputError, NeuroboltWarning
from bids_neurobolt.report import figures
from bids_neurobolt.stages.context import RunContext, StageResult
from bids_neurobolt.stages.targets import existing_targets

logger = logging.getLogger(__name__)

#: Precision of the tables written (as the targets').
FLOAT_FORMAT = "%.6g"

#: Seconds dropped at the start of the validation and of the test part (10 TRs of 2.1 s).
SPLIT_GAP_SECONDS = 20.0


@dataclass
class RunData:
    """What the model stage reads for one run.

    Attributes
    ----------
    eeg : numpy.ndarray, shape (n_channels, n_samples)
        Cleaned EEG of the model channels (µV, 200 Hz).
    ch_names : list of str
        Their names (10-20 labels).
    sfreq : float
        Rate of ``eeg`` (Hz).
    volumes : numpy.ndarray of int
        Volume-marker samples at ``sfreq`` (empty for a recording without markers).
    clean_vhdr : Path
        The cleaned EEG file.
    targets : pandas.DataFrame | None
        Scaled ROI targets, one row per volume (None for EEG-only runs).
    targets_path : Path | None
        Their TSV.
    atlas : str | None
        Atlas label of the targets.
    repetition_time : float | None
        Seconds between volumes.
    scaling : dict
        The targets sidecar's ``Parameters.Scaling``.
    """

    eeg: np.ndarray
    ch_names: list[str]
    sfreq: float
    volumes: np.ndarray
    clean_vhdr: Path
    targets: pd.DataFrame | None
    targets_path: Path | None
    atlas: str | None
    repetition_time: float | None
    scaling: dict[str, Any]


def preflight(config: Any) -> None:
    """Check ``--model`` and ``--pretrained`` before any run is processed.

    Raises
    ------
    MissingInputError, DataError
        When the model's description or weights, or the LaBraM checkpoint, are missing
        or unreadable (a pickled checkpoint is refused, never executed).
    """
    inputs = config.inputs
    if inputs.model is not None:
        from bids_neurobolt.model.weights import model_paths, read_metadata

        read_metadata(inputs.model)
        weights, _ = model_paths(inputs.model)
        if not weights.is_file():
            raise MissingInputError(
                "the model weights (.safetensors next to the .json) do not exist.",
                path=weights,
                fix="Pass the stem, .json or .safetensors of a model written by bids-neurobolt "
                "(OUTPUT_DIR/models/).",
            )
    if inputs.pretrained is not None:
        labram_state(inputs.pretrained)


def run(ctx: RunContext) -> StageResult:
    """Train NeuroBOLT on the run, or apply ``--model`` to it, and write the results."""
    applying = ctx.config.inputs.model is not None
    if not applying and ctx.spec.bold is None:
        return StageResult(
            "not applicable", "EEG-only recording: nothing to train on (pass --model to predict)"
        )
    found = existing_targets(ctx)
    targets = None if found is None else found[0]
    if not applying and targets is None:
        raise MissingInputError(
            "the run has no ROI targets with the current settings, so NeuroBOLT cannot be "
            "trained on it.",
            path=ctx.spec.bold,
            fix="Include the 'targets' stage (the default --steps), or pass --model to "
            "apply a trained model instead.",
        )
    atlas = _atlas_label(ctx, targets)
    sidecar = naming.sidecar_path(
        naming.timeseries_path(ctx.output_dir, ctx.spec.entities, atlas, "neurobolt")
    )
    if _up_to_date(ctx, sidecar):
        return StageResult("skipped", outputs=[sidecar])
    data = read_run(ctx, targets)
    _set_threads(ctx.config.execution.threads)
    if applying:
        return _apply(ctx, data)
    return _train(ctx, data)


# --------------------------------------------------------------------------- inputs


def read_run(ctx: RunContext, targets: Path | None) -> RunData:
    """Read the run's cleaned EEG, its volume markers and its targets.

    Raises
    ------
    MissingInputError
        When the run has no up-to-date cleaned EEG.
    DataError
        When the cleaned EEG cannot be read.
    """
    entities = ctx.spec.entities
    vhdr = naming.clean_eeg_path(ctx.output_dir, entities, "eeg", ".vhdr")
    quality = naming.clean_eeg_path(ctx.output_dir, entities, "quality", ".json")
    if not ctx.up_to_date("clean", vhdr, quality):
        raise MissingInputError(
            "the run has no cleaned EEG with the current settings (desc-clean_eeg.vhdr).",
            path=vhdr,
            fix="Include the 'clean' stage (the default --steps) in this or an earlier run.",
        )
    eeg, channels, sfreq, volumes = read_clean_eeg(vhdr, quality)
    table = scaling = None
    atlas = repetition_time = None
    if targets is not None:
        table = pd.read_csv(targets, sep="\t", na_values="n/a", keep_default_na=False)
        meta = json.loads(targets.with_suffix(".json").read_text(encoding="utf-8"))
        scaling = meta.get("Parameters", {}).get("Scaling", {})
        atlas = _atlas_of(targets)
        repetition_time = float(meta["RepetitionTime"])
    elif ctx.bold is not None:
        repetition_time = ctx.bold.repetition_time
    return RunData(
        eeg=eeg,
        ch_names=list(channels),
        sfreq=sfreq,
        volumes=volumes,
        clean_vhdr=vhdr,
        targets=table,
        targets_path=targets,
        atlas=atlas,
        repetition_time=repetition_time,
        scaling=scaling or {},
    )


def read_clean_eeg(vhdr: Path, quality: Path) -> tuple[np.ndarray, list[str], float, np.ndarray]:
    """Read the model channels and volume markers of a ``desc-clean`` EEG derivative.

    Returns
    -------
    eeg : numpy.ndarray, shape (n_channels, n_samples), float32
        The model-input channels (µV).
    ch_names : list of str
        Their names.
    sfreq : float
        Sampling rate (Hz).
    volumes : numpy.ndarray of int
        Volume-marker samples (empty for a recording without markers).

    Raises
    ------
    DataError
        When the files cannot be read.
    """
    import mne

    try:
        channels = json.loads(quality.read_text(encoding="utf-8"))["channels"]["model_input"]
        raw = mne.io.read_raw_brainvision(vhdr, preload=False, verbose="error")
        eeg = raw.get_data(picks=channels, verbose="error").astype(np.float32) * np.float32(1e6)
        events = pd.read_csv(
            vhdr.with_name(vhdr.name.replace("_eeg.vhdr", "_events.tsv")), sep="\t"
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise DataError(
            f"cannot read the cleaned EEG ({type(exc).__name__}: {exc}).",
            path=vhdr,
            fix="Delete the run's desc-clean files and run the 'clean' stage again.",
        ) from None
    volumes = events.loc[events["trial_type"] == "volume", "sample"].to_numpy(np.int64)
    return eeg, list(channels), float(raw.info["sfreq"]), volumes


def _atlas_of(path: Path) -> str:
    return next(p[6:] for p in path.name.split("_") if p.startswith("atlas-"))


def _atlas_label(ctx: RunContext, targets: Path | None) -> str:
    if ctx.config.inputs.model is not None:
        from bids_neurobolt.model.weights import read_metadata

        atlas = read_metadata(ctx.config.inputs.model).atlas
        return atlas or "custom"
    assert targets is not None
    return _atlas_of(targets)


def _fingerprint(path: Path | None) -> str | None:
    """SHA-256 of a model or weights file (part of what makes a result up to date)."""
    if path is None:
        return None
    if path.suffix not in {".safetensors", ".json", ".pth", ".pt", ".bin"}:
        path = path.with_name(path.name + ".safetensors")
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def labram_state(path: Path) -> Any:
    """LaBraM weights of ``--pretrained``, read once per invocation (preflight, then runs).

    The tensors are only copied into each new model, never changed.
    """
    try:
        stat = path.stat()
    except OSError:  # read_labram_state says what is wrong with the path
        return _cached_labram_state.__wrapped__(str(path), 0, 0)
    return _cached_labram_state(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _cached_labram_state(path: str, size: int, mtime_ns: int) -> Any:
    from bids_neurobolt.model.weights import read_labram_state

    return read_labram_state(path)


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hash a file once per content version (size and mtime), not once per run."""
    from bids_neurobolt.checksums import file_sha256

    return file_sha256(path)


def labram_weights(path: Path | None) -> dict[str, str] | None:
    """Name the LaBraM weights a model started from: file and SHA-256 (None: from scratch)."""
    if path is None:
        return None
    return {"file": Path(path).name, "sha256": _fingerprint(Path(path)) or ""}


def describe_start(path: Path | None, fit: Any) -> str:
    """One log line on how the network started and the layer-wise decay it trained with."""
    decay = fit.extra.get("train_config", {}).get("layer_decay")
    if path is None or fit.pretrained is None:
        return f"trained from scratch (no LaBraM weights), layer-wise lr decay {decay:g}"
    weights = labram_weights(path) or {}
    return (
        f"LaBraM weights {weights.get('file')} (SHA-256 {weights.get('sha256', '')[:12]}...): "
        f"{fit.pretrained.summary()}; layer-wise lr decay {decay:g}"
    )


def _inputs_fingerprint(ctx: RunContext) -> dict[str, str | None]:
    inputs = ctx.config.inputs
    try:
        return {
            "Model": _fingerprint(inputs.model),
            "Pretrained": _fingerprint(inputs.pretrained),
        }
    except OSError:
        return {"Model": None, "Pretrained": None}


def _up_to_date(ctx: RunContext, sidecar: Path) -> bool:
    tsv = sidecar.with_suffix(".tsv")
    if not ctx.up_to_date("model", tsv, sidecar):
        return False
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    return meta.get("InputChecksums") == _inputs_fingerprint(ctx)


def _set_threads(nprocs: int) -> None:
    import torch

    if torch.get_num_threads() != nprocs:
        torch.set_num_threads(nprocs)


def _runtime(ctx: RunContext) -> Any:
    """Device and progress display: a bar on a terminal, one log line per epoch otherwise."""
    from bids_neurobolt.train.loop import Runtime

    execution = ctx.config.execution
    bar = execution.verbosity >= 0 and sys.stderr.isatty()
    return Runtime(device=execution.device, precision=execution.precision, progress=bar)


# --------------------------------------------------------------------------- training


def _train(ctx: RunContext, data: RunData) -> StageResult:
    from bids_neurobolt.model.weights import ModelMetadata, save_model
    from bids_neurobolt.train import gap_for_tr, make_windows, train_neurobolt
    from bids_neurobolt.train.evaluation import evaluate_run, make_run_splits, too_short
    from bids_neurobolt.train.loop import epoch_logger
    from bids_neurobolt.train.stats import MIN_N_EFF

    assert data.targets is not None and data.repetition_time is not None
    science, inputs = ctx.config.science, ctx.config.inputs
    _check_volumes(data)
    windows = make_windows(data.eeg, data.volumes, ch_names=data.ch_names, sfreq=data.sfreq)
    roi_names = list(data.targets.columns)
    y = data.targets.to_numpy(np.float32)[windows.volumes]
    gap = gap_for_tr(data.repetition_time, SPLIT_GAP_SECONDS)
    try:
        splits = make_run_splits(science.split, len(windows), gap)
    except DataError as exc:
        warnings.warn(
            f"{ctx.spec.label}: NeuroBOLT not trained on this run: {exc.message}",
            NeuroboltWarning,
            stacklevel=1,
        )
        return StageResult("not applicable", f"run too short for --split {science.split}")
    pretrained = labram_state(inputs.pretrained) if inputs.pretrained is not None else None
    logger.info(
        "%s: training NeuroBOLT on %d windows x %d channels, %d ROI(s), %s%s.",
        ctx.spec.label,
        len(windows),
        len(data.ch_names),
        len(roi_names),
        f"{len(splits)}-fold blocked cross-validation" if len(splits) > 1 else "paper split",
        ", sloppy" if science.sloppy else "",
    )

    def train(split: Any, keep_epoch: int | None = None) -> Any:
        return train_neurobolt(
            windows.data, y, split, ch_names=data.ch_names, roi_names=roi_names,
            sloppy=science.sloppy, per_roi=science.per_roi, seed=science.random_seed,
            pretrained=pretrained, runtime=_runtime(ctx),
            callback=epoch_logger(logger, ctx.spec.label), keep_epoch=keep_epoch,
        )  # fmt: skip

    result = evaluate_run(
        windows.data, y, splits, train=train, roi_names=roi_names, sfreq=data.sfreq,
        seed=science.random_seed,
    )  # fmt: skip
    fit, metrics = result.final, result.metrics
    logger.info("%s: %s", ctx.spec.label, describe_start(inputs.pretrained, fit))
    atlas = data.atlas or "custom"
    training = {
        "split": result.description,
        "split_kind": result.split,
        "gap_volumes": int(gap),
        "windows": {name: int(idx.size) for name, idx in result.sets.items()},
        "folds": result.folds,
        "excluded_volumes": windows.excluded.tolist(),
        "repetition_time": data.repetition_time,
        "best_epoch": fit.best_epoch,
        "epochs": int(fit.history["epoch"].max()),
        "history": fit.history.round(6).to_dict(orient="list"),
        "device": fit.device,
        "precision": fit.precision,
        "seconds": round(fit.seconds, 2),
        "train_config": fit.extra.get("train_config", {}),
        "pretrained": None if fit.pretrained is None else fit.pretrained.summary(),
        "labram_weights": labram_weights(inputs.pretrained),
    }
    metadata = ModelMetadata.for_model(
        fit.model, roi_names, atlas=atlas, target_scaling=data.scaling,
        config_hash=science.digest("model"), seed=science.random_seed, training=training,
    )  # fmt: skip
    stem = naming.model_stem(ctx.output_dir, ctx.spec.entities, atlas)
    stem.parent.mkdir(parents=True, exist_ok=True)
    model_files = save_model(fit.model, stem, metadata)
    history = writer.write_tsv(naming.history_path(stem), fit.history, FLOAT_FORMAT)
    history_meta = naming.table_sidecar(
        fit.history.columns,
        Description="NeuroBOLT training history, one row per epoch.",
        Sources=[writer.derivative_uri(ctx.output_dir, model_files[0])],
        **ctx.provenance("model"),
    )
    history_json = writer.write_json(naming.sidecar_path(history), history_meta)
    n_rows = len(data.targets)
    predictions = _per_volume(result.predictions["neurobolt"], windows.volumes, n_rows, roi_names)
    baseline_table = _per_volume(result.predictions["baseline"], windows.volumes, n_rows, roi_names)
    test_volumes = windows.volumes[np.sort(result.sets["test"])]
    _training_figures(ctx, data, fit, metrics, predictions, baseline_table, test_volumes)
    extra = {
        "Model": writer.derivative_uri(ctx.output_dir, model_files[0]),
        "Evaluation": result.description,
        "Predictions": "out of sample: each volume predicted by the fold model that did not "
        "train on it"
        if result.split == "blocked-cv"
        else "the trained model's, for every "
        "volume with a full window (training volumes in sample)",
        "Split": {name: _volume_ranges(windows.volumes[idx]) for name, idx in result.sets.items()},
        "BestEpoch": fit.best_epoch,
        "Device": fit.device,
        "Precision": fit.precision,
        "TrainingSeconds": round(fit.seconds, 2),
        "Sloppy": science.sloppy,
        "PretrainedWeights": training["labram_weights"],
        "PretrainedReport": training["pretrained"],
    }
    written = _write(ctx, data, atlas, predictions, metrics, extra)
    short = too_short(metrics)
    if short:
        warnings.warn(
            f"{ctx.spec.label}: the test windows of {len(short)} of {len(roi_names)} ROI(s) "
            f"hold fewer than {MIN_N_EFF:g} effective samples, too few to evaluate a "
            "correlation: their r, CI and p are n/a. Use longer runs (blocked-cv needs "
            "about 5 min, --split paper 15 min or more), or evaluate across subjects at the "
            "group level.",
            NeuroboltWarning,
            stacklevel=1,
        )
    _log_test_summary(ctx.spec.label, metrics)
    return StageResult("done", outputs=[*model_files, history, history_json, *written])


def _log_test_summary(label: str, metrics: pd.DataFrame) -> None:
    """Log the out-of-sample r of each model with its CI, and how many ROIs are significant."""
    test = metrics[metrics["split"] == "test"].dropna(subset=["pearson_r"])
    if test.empty:
        logger.info("%s: no ROI could be evaluated (too few effective samples).", label)
        return
    parts = []
    for name, column in (
        ("NeuroBOLT", "pearson_r"),
        ("ridge", "baseline_r"),
        ("FIR ridge", "fir_r"),
    ):
        parts.append(
            f"{name} {test[column].median():.3f} (CI {test[f'{column}_ci_low'].median():.2f} to "
            f"{test[f'{column}_ci_high'].median():.2f})"
        )
    logger.info(
        "%s: out-of-sample r, median over %d evaluable ROI(s): %s; NeuroBOLT significant "
        "(q < 0.05) in %d, above ridge (p < 0.05) in %d.",
        label, len(test), "; ".join(parts), int((test["q_value"] < 0.05).sum()),
        int((test["p_value_vs_baseline"] < 0.05).sum()),
    )  # fmt: skip


def _check_volumes(data: RunData) -> None:
    n_rows = len(data.targets) if data.targets is not None else 0
    if data.volumes.size != n_rows:
        raise DataError(
            f"the cleaned EEG has {data.volumes.size} volume markers but the targets have "
            f"{n_rows} rows.",
            path=data.targets_path,
            fix="Rerun the 'clean' and 'targets' stages with the same settings (they are "
            "redone when their settings change).",
        )


# --------------------------------------------------------------------------- applying


def _apply(ctx: RunContext, data: RunData) -> StageResult:
    from bids_neurobolt.model.weights import check_compatible, load_model
    from bids_neurobolt.train import make_windows, predict, regular_markers
    from bids_neurobolt.train.metrics import evaluation_table

    model_path = ctx.config.inputs.model
    assert model_path is not None
    runtime = _runtime(ctx)
    model, metadata = load_model(model_path, device=runtime.torch_device())
    roi_names = list(metadata.roi_names)
    compat = check_compatible(
        metadata,
        ch_names=data.ch_names,
        sfreq=data.sfreq,
        roi_names=None if data.targets is None else list(data.targets.columns),
    )
    eeg = data.eeg[compat.channel_index]
    ch_names = [data.ch_names[i] for i in compat.channel_index]
    markers, grid_tr = data.volumes, None
    if markers.size == 0:
        grid_tr = (
            ctx.config.science.prediction_tr
            or data.repetition_time
            or metadata.training.get("repetition_time")
        )
        if not grid_tr:
            raise DataError(
                "the recording has no volume markers and the model does not record the "
                "repetition time it was trained at, so there is no prediction grid.",
                path=model_path,
                fix="Use a model trained by bids-neurobolt (its JSON records it).",
            )
        markers = regular_markers(eeg.shape[1], data.sfreq, float(grid_tr), first=0.0)
    windows = make_windows(eeg, markers, ch_names=ch_names, sfreq=data.sfreq)
    values = predict(model, windows.data, runtime=runtime)
    n_rows = markers.size
    predictions = _per_volume(values, windows.volumes, n_rows, roi_names)
    metrics = None
    if data.targets is not None and compat.roi_index is not None:
        _check_volumes(data)
        measured = data.targets.to_numpy(np.float32)[windows.volumes][:, compat.roi_index]
        metrics = evaluation_table(
            measured, {"neurobolt": values}, {"all": np.arange(len(windows))}, roi_names,
            seed=ctx.config.science.random_seed,
        )  # fmt: skip
    tr = float(grid_tr or data.repetition_time or metadata.training.get("repetition_time", 0))
    extra = {
        "Model": str(model_path),
        "ModelConfigHash": metadata.config_hash,
        "ModelVersion": metadata.version,
        "PredictionGrid": "volume markers" if grid_tr is None else f"every {tr:g} s (no markers)",
    }
    written = _write(ctx, data, metadata.atlas or "custom", predictions, metrics, extra, tr=tr)
    if metrics is not None:
        writer.write_text(
            naming.figure_path(ctx.output_dir, ctx.spec.entities, "roir", "bold"),
            figures.roi_correlations(metrics, split="all"),
        )
    logger.info(
        "%s: NeuroBOLT predicted %d of %d %s from %s.",
        ctx.spec.label,
        len(windows),
        n_rows,
        "volumes" if grid_tr is None else "grid steps",
        Path(model_path).name,
    )
    return StageResult("done", outputs=written)


# --------------------------------------------------------------------------- outputs


def _per_volume(
    values: np.ndarray, volumes: np.ndarray, n_rows: int, names: list[str]
) -> pd.DataFrame:
    """Place window predictions on the volume grid (NaN where a volume has no window)."""
    table = np.full((n_rows, len(names)), np.nan, dtype=np.float64)
    table[volumes] = values
    return pd.DataFrame(table, columns=names)


def _volume_ranges(volumes: np.ndarray) -> list[int] | None:
    return None if volumes.size == 0 else [int(volumes.min()), int(volumes.max())]


def _write(
    ctx: RunContext,
    data: RunData,
    atlas: str,
    predictions: pd.DataFrame,
    metrics: pd.DataFrame | None,
    extra: dict[str, Any],
    tr: float | None = None,
) -> list[Path]:
    entities = ctx.spec.entities
    tsv = naming.timeseries_path(ctx.output_dir, entities, atlas, desc="neurobolt")
    sidecar = naming.sidecar_path(tsv)
    tr = tr or data.repetition_time or 0.0
    written = []
    if metrics is not None:
        path = naming.metrics_path(ctx.output_dir, entities, atlas)
        written.append(writer.write_tsv(path, metrics, FLOAT_FORMAT))
        sidecar_meta = naming.table_sidecar(
            metrics.columns,
            Description="Prediction quality of NeuroBOLT and the ridge baselines per ROI and "
            "set, with effective sample sizes, bootstrap CIs, null and paired p-values.",
            Methods=statistics_methods(),
            Sources=[writer.derivative_uri(ctx.output_dir, tsv)],
            **ctx.provenance("model"),
        )
        written.append(writer.write_json(naming.sidecar_path(path), sidecar_meta))
    written.append(writer.write_tsv(tsv, predictions, FLOAT_FORMAT))
    percent = to_percent_signal_change(predictions, data.scaling)
    if percent is not None:
        psc = naming.timeseries_path(ctx.output_dir, entities, atlas, desc="neuroboltpsc")
        written.append(writer.write_tsv(psc, percent, FLOAT_FORMAT))
        written.append(
            writer.write_json(
                naming.sidecar_path(psc),
                {
                    "Description": naming.DESCRIPTIONS["neuroboltpsc"],
                    "SamplingFrequency": round(1.0 / tr, 9) if tr else None,
                    "Units": "percent signal change of the ROI's mean BOLD",
                    "Formula": "100 * (value * Scale + Center) * BoldStd / BoldMean, per column, "
                    "from the desc-neurobolt value and TargetScaling",
                    "Sources": [writer.derivative_uri(ctx.output_dir, tsv)],
                    **ctx.provenance("model"),
                },
            )
        )
    sources = [writer.derivative_uri(ctx.output_dir, data.clean_vhdr)]
    if data.targets_path is not None:
        sources.append(writer.derivative_uri(ctx.output_dir, data.targets_path))
    meta = {
        "Description": naming.DESCRIPTIONS["neurobolt"],
        "SamplingFrequency": round(1.0 / tr, 9) if tr else None,
        "RepetitionTime": tr or None,
        "StartTime": 0.0,
        "Columns": list(predictions.columns),
        "Units": "scaled as the desc-bold targets (see TargetScaling)",
        "TargetScaling": data.scaling,
        "WindowSeconds": 16.0,
        "Sources": sources,
        **extra,
        "InputChecksums": _inputs_fingerprint(ctx),
        **ctx.provenance("model"),
    }
    written.append(writer.write_json(sidecar, meta))
    return written


def statistics_methods(*, group: bool = False) -> dict[str, str]:
    """Say how each statistic of a metrics table is computed (for its JSON sidecar).

    The ``baseline_`` entries describe the HRF ridge; the FIR ridge's ``fir_`` columns are
    computed the same way. ``group`` adds the across-subject statistics of the summary.
    """
    from bids_neurobolt.train.stats import GROUP_METHODS, METHODS

    methods = {key: text for key, text in METHODS.items() if key not in ("roi", "n")}
    methods.update(
        {
            key.replace("baseline", "fir"): text.replace("baseline", "FIR ridge")
            for key, text in METHODS.items()
            if "baseline" in key
        }
    )
    if group:
        methods.update(GROUP_METHODS)
    return methods


def to_percent_signal_change(
    predictions: pd.DataFrame, scaling: dict[str, Any]
) -> pd.DataFrame | None:
    """Map predictions in target units back to percent signal change of each ROI's BOLD.

    Inverts the targets' scaling (``Center``, ``Scale``) and z-scoring (``BoldStd``) and
    divides by the ROI's mean BOLD (``BoldMean``); the removed trend, confounds and
    frequencies above the low-pass are not restored.

    Returns
    -------
    pandas.DataFrame | None
        None when the scaling lacks a parameter (e.g. precomputed tables: no BOLD mean).
    """
    try:
        columns = {
            name: np.array(
                [scaling[key][name] for key in ("Center", "Scale", "BoldStd", "BoldMean")],
                dtype=np.float64,
            )
            for name in predictions.columns
        }
    except (KeyError, TypeError, ValueError):
        return None
    if any(not np.all(np.isfinite(v)) or v[3] == 0 for v in columns.values()):
        return None
    out = pd.DataFrame(index=predictions.index)
    for name, (center, scale, std, mean) in columns.items():
        out[name] = 100.0 * (predictions[name].to_numpy(np.float64) * scale + center) * std / mean
    return out


def _training_figures(
    ctx: RunContext,
    data: RunData,
    fit: Any,
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    test_volumes: np.ndarray,
) -> None:
    entities = ctx.spec.entities
    writer.write_text(
        naming.figure_path(ctx.output_dir, entities, "training", "bold"),
        figures.training_curves(fit.history, fit.best_epoch),
    )
    assert data.targets is not None and data.repetition_time is not None
    writer.write_text(
        naming.figure_path(ctx.output_dir, entities, "prediction", "bold"),
        figures.predicted_vs_measured(
            test_volumes * data.repetition_time,
            data.targets.iloc[test_volumes],
            predictions.iloc[test_volumes],
            baseline.iloc[test_volumes],
        ),
    )
    writer.write_text(
        naming.figure_path(ctx.output_dir, entities, "roir", "bold"),
        figures.roi_correlations(metrics, split="test"),
    )
