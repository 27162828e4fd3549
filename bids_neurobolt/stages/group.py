"""Group level: NeuroBOLT across subjects, from the participant-level outputs alone.

Reads every run of OUTPUT_DIR that has cleaned EEG (``desc-clean``) and ROI targets
(``desc-bold``), pairs each volume with the 16 s of EEG before it (windows cached in the
work folder, memory-mapped, so a rerun does not cut them again), then evaluates the
model on subjects it was not trained on:

- k-fold cross-validation across subjects (``--folds``; fold ``i`` tests, fold ``i + 1``
  validates, the rest train), or the explicit split of ``--group-split``; with two
  subjects, each tests the model trained on the other (no validation: last epoch);
- the ridge baseline on the same splits;
- one model trained on every subject (the validation subjects of the first fold choose
  its epoch), saved in ``models/`` to apply to new EEG with ``--model``.

Outputs (``group/`` and ``models/`` are in ``.bidsignore``)::

    group/group_atlas-<A>_desc-neurobolt_metrics.tsv   per run and ROI: test r and MSE
    group/group_atlas-<A>_desc-neurobolt_summary.tsv   per ROI: mean, SD, median over runs
    group/group_atlas-<A>_desc-neurobolt_folds.json    folds, epochs, settings (written last)
    group/figures/group_atlas-<A>_desc-<F>_bold.svg    figures of the group report: forest
        (mean r per ROI with CIs), brainmap (mean r on the atlas), rmatrix (r per held-out
        run and ROI), traces (best and worst ROI of each held-out run), curves (losses)
    models/group_atlas-<A>_desc-neurobolt_model.safetensors + .json

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt import __version__
from bids_neurobolt.config import Config
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.errors import ConfigError, DataError, MissingInputError
from bids_neurobolt.report import figures
from bids_neurobolt.stages.model import (
    describe_start,
    labram_weights,
    read_clean_eeg,
    statistics_methods,
)

logger = logging.getLogger(__name__)


#: Group figures (``desc-`` label), in the report's order.
GROUP_FIGURES = ("forest", "brainmap", "rmatrix", "traces", "curves")


@dataclass
class GroupRun:
    """One participant-level run usable at the group level."""

    label: str
    subject: str
    windows: Any  # bids_neurobolt.train.Windows
    targets: np.ndarray  # (n_windows, n_rois), rows of the windows' volumes
    roi_names: list[str]
    atlas: str
    repetition_time: float
    quality: dict[str, Any]
    atlas_source: str = ""  # the targets' Parameters.AtlasSource (file of the atlas)


@dataclass
class GroupResult:
    """What the group level wrote."""

    status: str  # "done" or "skipped"
    outputs: list[Path]
    metrics: pd.DataFrame | None = None


def group_paths(output_dir: Path, atlas: str) -> dict[str, Path]:
    """Return the group-level output files for an atlas label."""
    stem = f"group_atlas-{atlas}_desc-neurobolt"
    folder = output_dir / "group"
    return {
        "metrics": folder / f"{stem}_metrics.tsv",
        "summary": folder / f"{stem}_summary.tsv",
        "folds": folder / f"{stem}_folds.json",
        "history": folder / f"{stem}_history.tsv",
        **{
            f"figure_{desc}": folder / "figures" / f"group_atlas-{atlas}_desc-{desc}_bold.svg"
            for desc in GROUP_FIGURES
        },
        "model": output_dir / "models" / f"{stem}_model",
    }


def run_group(config: Config, work_dir: Path, device: str | None = None) -> GroupResult:
    """Train and evaluate NeuroBOLT across subjects and write the group outputs.

    Parameters
    ----------
    config : Config
        The invocation's configuration (science settings, ``--group-split``, device).
    work_dir : Path
        Folder of the window cache (kept between invocations).
    device : str | None
        This process's device under ``torchrun`` (``cuda:<local rank>``); None uses
        ``--device``. Under ``torchrun`` every process trains its share of each batch and
        only the main process writes.

    Returns
    -------
    GroupResult

    Raises
    ------
    MissingInputError
        Fewer than two subjects with cleaned EEG and targets.
    ConfigError
        A split file that is not valid or names no subject with results.
    """
    from bids_neurobolt.train import WindowCache

    output_dir = config.execution.output_dir
    runs = collect_runs(output_dir, WindowCache(work_dir / "windows"))
    subjects = sorted({r.subject for r in runs})
    if len(subjects) < 2:
        raise MissingInputError(
            f"the group level needs cleaned EEG and ROI targets of at least two participants; "
            f"found {len(subjects)} ({', '.join(subjects) or 'none'}).",
            path=output_dir,
            fix="Run the participant level (stages clean and targets) for more participants "
            "into this folder first.",
        )
    atlas = runs[0].atlas
    paths = group_paths(output_dir, atlas)
    fingerprint = _fingerprint(config, runs)
    if _up_to_date(paths["folds"], fingerprint):
        logger.info(
            "group level up to date (%d runs of %d subjects), skipped.", len(runs), len(subjects)
        )
        return GroupResult("skipped", [paths["folds"]])
    return _evaluate(config, runs, paths, fingerprint, device)


# --------------------------------------------------------------------------- inputs


def collect_runs(output_dir: Path, cache: Any) -> list[GroupRun]:
    """Gather the runs with cleaned EEG and targets (one atlas: the most common one).

    Runs are made comparable: the channels and ROIs common to all of them are kept.
    """
    from bids_neurobolt.train import cache_key, make_windows

    found = []
    for sidecar in sorted(output_dir.glob("sub-*/**/func/*_desc-bold_timeseries.json")):
        label = sidecar.name.split("_space-")[0]
        eeg_dir = sidecar.parent.parent / "eeg"
        vhdr = eeg_dir / f"{label}_desc-clean_eeg.vhdr"
        quality = eeg_dir / f"{label}_desc-clean_quality.json"
        if not (vhdr.is_file() and quality.is_file()):
            logger.info("%s: no cleaned EEG; left out of the group level.", label)
            continue
        found.append((label, sidecar, vhdr, quality))
    if not found:
        return []
    atlases = Counter(_entity(s.name, "atlas") for _, s, _, _ in found)
    atlas = atlases.most_common(1)[0][0]
    if len(atlases) > 1:
        logger.warning(
            "targets of several atlases (%s); the group level uses %s, the most common.",
            ", ".join(sorted(atlases)),
            atlas,
        )
    runs = []
    for label, sidecar, vhdr, quality in found:
        if _entity(sidecar.name, "atlas") != atlas:
            continue
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        table = read_targets(sidecar.with_suffix(".tsv"))
        key = cache_key(eeg=_file_digest(vhdr.with_suffix(".eeg")), events=_file_digest(
            vhdr.with_name(vhdr.name.replace("_eeg.vhdr", "_events.tsv"))))  # fmt: skip

        def make(vhdr: Path = vhdr, quality: Path = quality) -> Any:
            eeg, names, sfreq, volumes = read_clean_eeg(vhdr, quality)
            return make_windows(eeg, volumes, ch_names=names, sfreq=sfreq)

        windows = cache.get_or_make(key, make)
        if windows.volumes.max() >= len(table):
            logger.warning(
                "%s: the cleaned EEG has more volumes (%d) than the targets table %s (%d rows); "
                "left out. Rerun the participant level for this run.",
                label, int(windows.volumes.max()) + 1, sidecar.with_suffix(".tsv").name,
                len(table),
            )  # fmt: skip
            continue
        if table.iloc[windows.volumes].isna().any().any():
            raise DataError(
                "the ROI targets have n/a values at volumes that have EEG windows.",
                path=sidecar.with_suffix(".tsv"),
                fix="Rerun the participant level's targets stage for this run (delete this "
                "file and its .json first), or leave the run out with --participant-label.",
            )
        runs.append(
            GroupRun(
                label=label,
                subject=label.split("_")[0].removeprefix("sub-"),
                windows=windows,
                targets=table.to_numpy(np.float32)[windows.volumes],
                roi_names=list(table.columns),
                atlas=atlas,
                repetition_time=float(meta["RepetitionTime"]),
                quality=json.loads(quality.read_text(encoding="utf-8")),
                atlas_source=str(meta.get("Parameters", {}).get("AtlasSource", "")),
            )
        )
    return _harmonise(runs)


def read_targets(path: Path) -> pd.DataFrame:
    """Read a participant's ROI targets table, refusing one that is not a numeric table.

    Raises
    ------
    DataError
        When the file cannot be parsed, is empty, or holds values that are not numbers
        (``n/a`` excepted); the message names the file.
    """
    fix = "Rerun the participant level's targets stage for this run (delete this file first)."
    try:
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read the ROI targets table ({exc}).", path=path, fix=fix) from None
    not_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if table.empty or not_numeric:
        problem = "it has no rows" if table.empty else f"columns {not_numeric} are not numbers"
        raise DataError(f"the ROI targets table is corrupt: {problem}.", path=path, fix=fix)
    return table


def _harmonise(runs: list[GroupRun]) -> list[GroupRun]:
    """Keep the channels and ROIs every run has (in the first run's order)."""
    if not runs:
        return runs
    channels = [c for c in runs[0].windows.ch_names if all(c in r.windows.ch_names for r in runs)]
    rois = [n for n in runs[0].roi_names if all(n in r.roi_names for r in runs)]
    if not channels or not rois:
        raise DataError(
            "the runs share no EEG channel or no ROI, so no model can be trained across them.",
            fix="Process every participant with the same montage and atlas.",
        )
    for run in runs:
        if list(run.windows.ch_names) != channels:
            from bids_neurobolt.train import Windows

            idx = [run.windows.ch_names.index(c) for c in channels]
            w = run.windows
            run.windows = Windows(
                np.ascontiguousarray(w.data[:, idx]), w.volumes, w.ends, w.excluded, w.sfreq,
                tuple(channels),
            )  # fmt: skip
        if run.roi_names != rois:
            run.targets = run.targets[:, [run.roi_names.index(n) for n in rois]]
            run.roi_names = rois
    dropped = {c for r in runs for c in r.windows.ch_names} - set(channels)
    if dropped:
        logger.warning(
            "channels missing from some runs were left out: %s", ", ".join(sorted(dropped))
        )
    return runs


def _entity(name: str, key: str) -> str:
    return next((p[len(key) + 1 :] for p in name.split("_") if p.startswith(f"{key}-")), "")


def _file_digest(path: Path) -> str:
    from bids_neurobolt.checksums import file_sha256

    return file_sha256(path)[:16]


def _fingerprint(config: Config, runs: list[GroupRun]) -> dict[str, Any]:
    split_file = config.inputs.group_split
    return {
        "ScienceHash": config.science.digest("group"),
        "Runs": sorted(r.label for r in runs),
        "GroupSplit": None if split_file is None else _file_digest(split_file),
        "Pretrained": None if config.inputs.pretrained is None else str(config.inputs.pretrained),
    }


def _up_to_date(folds: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        meta = json.loads(folds.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("Fingerprint") == fingerprint


# --------------------------------------------------------------------------- splits


def make_splits(
    window_subjects: np.ndarray, config: Config
) -> tuple[list[Any], list[dict[str, list[str]]]]:
    """Return the inter-subject splits and, for each, its subjects per set.

    Raises
    ------
    ConfigError
        An unreadable or invalid ``--group-split`` file, or more folds than subjects.
    """
    from bids_neurobolt.train import Split, kfold_subject_splits, subject_split

    subjects = sorted(set(window_subjects.tolist()))
    path = config.inputs.group_split
    if path is not None:
        sets = _read_split_file(path)
        split = subject_split(window_subjects, **sets)
        return [split], [sets]
    k = config.science.folds or min(5, len(subjects))
    if k > len(subjects):
        raise ConfigError(
            f"--folds {k} is more than the {len(subjects)} subjects with results.",
            fix=f"Use --folds between 3 and {len(subjects)}, or 0 (automatic).",
        )
    if len(subjects) == 2 or k == 2:
        splits, described = [], []
        for test in subjects:
            train = [s for s in subjects if s != test]
            labels = window_subjects
            splits.append(
                Split(
                    np.flatnonzero(np.isin(labels, train)),
                    np.zeros(0, dtype=np.int64),
                    np.flatnonzero(labels == test),
                )
            )
            described.append({"train": train, "val": [], "test": [test]})
        return splits, described
    splits, folds = kfold_subject_splits(window_subjects, k, seed=config.science.random_seed)
    described = [
        {
            "train": [s for j, f in enumerate(folds) if j not in (i, (i + 1) % k) for s in f],
            "val": folds[(i + 1) % k],
            "test": folds[i],
        }
        for i in range(k)
    ]
    return splits, described


def _read_split_file(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the split file ({exc}).",
            path=path,
            fix='Write JSON like {"train": ["01", "02"], "val": ["03"], "test": ["04"]}.',
        ) from None
    if not isinstance(data, dict) or set(data) - {"train", "val", "test"} or "train" not in data:
        raise ConfigError(
            "the split file must be a JSON object with keys train, val (optional) and test.",
            path=path,
            fix='Write JSON like {"train": ["01", "02"], "val": ["03"], "test": ["04"]}.',
        )
    return {
        key: [str(s).removeprefix("sub-") for s in data.get(key, [])]
        for key in ("train", "val", "test")
    }


# --------------------------------------------------------------------------- training


def _evaluate(
    config: Config,
    runs: list[GroupRun],
    paths: dict[str, Path],
    fingerprint: dict[str, Any],
    device: str | None = None,
) -> GroupResult:
    from bids_neurobolt.model.weights import ModelMetadata, read_labram_state, save_model
    from bids_neurobolt.train import (
        Runtime,
        TrainConfig,
        concatenate,
        is_main_process,
        pearson_r,
        train_neurobolt,
    )
    from bids_neurobolt.train.loop import epoch_logger
    from bids_neurobolt.train.metrics import evaluation_table

    science = config.science
    stack, run_index = concatenate([r.windows for r in runs])
    y = np.concatenate([r.targets for r in runs])
    labels = np.array([runs[i].label for i in run_index])
    subjects = np.array([runs[i].subject for i in run_index])
    ch_names, roi_names = list(runs[0].windows.ch_names), runs[0].roi_names
    splits, described = make_splits(subjects, config)
    pretrained = (
        read_labram_state(config.inputs.pretrained)
        if config.inputs.pretrained is not None
        else None
    )
    train_config = (
        TrainConfig.sloppy(seed=science.random_seed)
        if science.sloppy
        # the paper's inter-subject batch
        else TrainConfig.for_start(pretrained is not None, batch_size=64, seed=science.random_seed)
    )
    runtime = Runtime(
        device=device or config.execution.device,
        precision=config.execution.precision,  # type: ignore[arg-type]
        progress=False,
    )
    from bids_neurobolt.train.baselines import baseline_features
    from bids_neurobolt.train.evaluation import baseline_fold_predictions

    sfreq = runs[0].windows.sfreq
    features = {kind: baseline_features(stack, kind=kind, sfreq=sfreq) for kind in ("hrf", "fir")}
    rows, raw, folds_meta, histories = [], [], [], []
    held_out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for fold, (split, sets) in enumerate(zip(splits, described, strict=True), start=1):
        logger.info(
            "group fold %d/%d: train %s | validate %s | test %s (%d/%d/%d windows).",
            fold, len(splits), ",".join(sets["train"]), ",".join(sets["val"]) or "-",
            ",".join(sets["test"]), split.train.size, split.val.size, split.test.size,
        )  # fmt: skip
        fit = train_neurobolt(
            stack, y, split, ch_names=ch_names, roi_names=roi_names, sloppy=science.sloppy,
            per_roi=science.per_roi, seed=science.random_seed, pretrained=pretrained,
            train_config=train_config, runtime=runtime,
            callback=epoch_logger(logger, f"group fold {fold}/{len(splits)}"),
        )  # fmt: skip
        predictions = {
            "neurobolt": fit.predictions,
            **baseline_fold_predictions(features, y, split),
        }
        for run in pd.unique(labels[split.test]):
            idx = split.test[labels[split.test] == run]
            held_out[run] = (idx, predictions["neurobolt"][idx], predictions["baseline"][idx])
            table = evaluation_table(y, predictions, {"test": idx}, roi_names,
                                     seed=science.random_seed)  # fmt: skip
            table.insert(0, "fold", fold)
            table.insert(1, "run", run)
            rows.append(table)
            r = {name: pearson_r(y[idx], values[idx]) for name, values in predictions.items()}
            raw.append(pd.DataFrame({"run": run, "roi": roi_names, **r}))
        histories.append(fit.history.assign(fold=str(fold)))
        folds_meta.append(
            {**sets, "best_epoch": fit.best_epoch, "windows": split.sizes(),
             "history": fit.history.round(6).to_dict(orient="list"), "device": fit.device}
        )  # fmt: skip
    metrics = pd.concat(rows, ignore_index=True)
    metrics.insert(1, "subject", [r.split("_")[0].removeprefix("sub-") for r in metrics["run"]])
    summary = summarise(pd.concat(raw, ignore_index=True))

    # One model from every subject (the first fold's validation subjects pick the epoch).
    from bids_neurobolt.train import Split

    val_subjects = described[0]["val"]
    final_split = Split(
        np.flatnonzero(~np.isin(subjects, val_subjects)),
        np.flatnonzero(np.isin(subjects, val_subjects)),
        np.zeros(0, dtype=np.int64),
    )
    logger.info(
        "group model: training on %s (%d windows)%s.",
        ",".join(sorted(set(subjects) - set(val_subjects))), final_split.train.size,
        f", {','.join(val_subjects)} choosing the epoch" if val_subjects else ", last epoch kept",
    )  # fmt: skip
    final = train_neurobolt(
        stack, y, final_split, ch_names=ch_names, roi_names=roi_names, sloppy=science.sloppy,
        per_roi=science.per_roi, seed=science.random_seed, pretrained=pretrained,
        train_config=train_config, runtime=runtime, callback=epoch_logger(logger, "group model"),
    )  # fmt: skip
    repetition_time = float(np.median([r.repetition_time for r in runs]))
    metadata = ModelMetadata.for_model(
        final.model, roi_names, atlas=runs[0].atlas, config_hash=science.digest("group"),
        seed=science.random_seed,
        target_scaling={"Method": science.scaling, "Note": "per run, see each desc-bold sidecar"},
        training={"split": "inter-subject, all subjects", "subjects": sorted(set(subjects)),
                  "validation_subjects": val_subjects, "best_epoch": final.best_epoch,
                  "repetition_time": repetition_time,
                  "train_config": final.extra.get("train_config", train_config.to_dict()),
                  "labram_weights": labram_weights(config.inputs.pretrained)},
    )  # fmt: skip
    logger.info("group level model: %s", describe_start(config.inputs.pretrained, final))
    if not is_main_process():  # under torchrun, the main process writes
        return GroupResult("done", [], metrics)
    paths["model"].parent.mkdir(parents=True, exist_ok=True)
    model_files = save_model(final.model, paths["model"], metadata)
    outputs = [*model_files]
    history = pd.concat([*histories, final.history.assign(fold="all")], ignore_index=True)
    folds_uri = writer.derivative_uri(config.execution.output_dir, paths["folds"])
    for key, table, description in (
        ("metrics", metrics, "Inter-subject test metrics per held-out run and ROI."),
        ("summary", summary, "Inter-subject test Pearson r per ROI across held-out runs."),
        ("history", history[["fold", *final.history.columns]], "Training history per fold."),
    ):
        outputs.append(writer.write_tsv(paths[key], table, "%.6g"))
        meta = naming.table_sidecar(
            table.columns, Description=description, Sources=[folds_uri],
            RandomSeed=science.random_seed, SoftwareVersion=f"bids-neurobolt {__version__}",
            **({"Methods": statistics_methods(group=key == "summary")} if key != "history" else {}),
        )  # fmt: skip
        outputs.append(writer.write_json(naming.sidecar_path(paths[key]), meta))
    volumes = np.concatenate([r.windows.volumes for r in runs])
    traces = heldout_traces(summary, y, volumes, held_out, roi_names)
    atlas_file = _atlas_file(runs[0].atlas_source)
    for desc, svg in (
        ("forest", figures.forest_plot(summary)),
        ("brainmap", _brain_map(atlas_file, summary)),
        ("rmatrix", figures.r_matrix(metrics)),
        ("traces", figures.heldout_traces(traces, repetition_time)),
        ("curves", figures.fold_curves(history)),
    ):
        if svg is not None:
            outputs.append(writer.write_text(paths[f"figure_{desc}"], svg))
    split_kind = (
        "explicit (--group-split)"
        if config.inputs.group_split
        else f"{len(splits)}-fold across subjects"
    )
    model_uri = writer.derivative_uri(config.execution.output_dir, model_files[0])
    outputs.append(
        writer.write_json(
            paths["folds"],
            {
                "Description": "Inter-subject NeuroBOLT evaluation (bids-neurobolt group level).",
                "Split": split_kind,
                "Folds": folds_meta,
                "Channels": ch_names,
                "ROIs": roi_names,
                "Model": model_uri,
                "TrainConfig": final.extra.get("train_config", train_config.to_dict()),
                "PretrainedWeights": labram_weights(config.inputs.pretrained),
                "Verdict": verdict(summary),
                "Sloppy": science.sloppy,
                "Fingerprint": fingerprint,
                "RandomSeed": science.random_seed,
            },
        )
    )
    logger.info(
        "group level: %d runs of %d subjects, %d fold(s). %s",
        len(runs), len(set(subjects)), len(splits), verdict(summary),
    )  # fmt: skip
    return GroupResult("done", outputs, metrics)


def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    """Per ROI, across held-out subjects: mean r with CI for each model, and paired tests.

    Parameters
    ----------
    raw : pandas.DataFrame
        One row per held-out run and ROI: ``run``, ``roi`` and the Pearson r of
        ``neurobolt``, ``baseline`` (HRF ridge) and ``fir`` (FIR ridge) on that run's
        windows (whatever their effective size: subjects, not windows, are the unit
        of inference here).

    Returns
    -------
    pandas.DataFrame
        ``roi``, ``n_subjects``, ``n_runs``; ``mean_r`` (mean over subjects of each
        subject's mean r over its runs) with ``mean_r_ci_low``/``mean_r_ci_high`` (t
        interval of Fisher-z values), ``sd_r``, ``median_r``, ``p_value`` (sign-flip
        test of r > 0 across subjects) and ``q_value`` (Benjamini-Hochberg over ROIs);
        the same mean and CI for the ridges (``mean_baseline_r``, ``mean_fir_r``...);
        ``p_value_vs_baseline``, ``q_value_vs_baseline``, ``p_value_vs_fir`` (sign-flip
        tests of NeuroBOLT r > ridge r across subjects) and ``p_value_below_baseline``
        (ridge r > NeuroBOLT r).
    """
    from bids_neurobolt.train.stats import (
        benjamini_hochberg,
        mean_r_ci,
        paired_sign_flip_p,
    )

    raw = raw.assign(subject=[r.split("_")[0].removeprefix("sub-") for r in raw["run"]])
    per_subject = raw.groupby(["roi", "subject"], sort=False)[["neurobolt", "baseline", "fir"]]
    subjects = per_subject.mean().reset_index()
    rows = []
    for roi, part in subjects.groupby("roi", sort=False):
        row: dict[str, Any] = {
            "roi": roi,
            "n_subjects": int(part["neurobolt"].notna().sum()),
            "n_runs": int(raw.loc[raw["roi"] == roi, "neurobolt"].notna().sum()),
        }
        for name, prefix in (("neurobolt", "mean_r"), ("baseline", "mean_baseline_r"),
                             ("fir", "mean_fir_r")):  # fmt: skip
            mean, low, high = mean_r_ci(part[name].to_numpy(float))
            row.update({prefix: mean, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high})
            if name == "neurobolt":
                row["sd_r"] = float(part[name].std(ddof=1)) if len(part) > 1 else np.nan
                row["median_r"] = float(part[name].median())
        ours = part["neurobolt"].to_numpy(float)
        row["p_value"] = paired_sign_flip_p(ours, np.zeros_like(ours))
        row["p_value_vs_baseline"] = paired_sign_flip_p(ours, part["baseline"].to_numpy(float))
        row["p_value_below_baseline"] = paired_sign_flip_p(part["baseline"].to_numpy(float), ours)
        row["p_value_vs_fir"] = paired_sign_flip_p(ours, part["fir"].to_numpy(float))
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.insert(
        summary.columns.get_loc("p_value") + 1, "q_value",
        benjamini_hochberg(summary["p_value"].to_numpy(float)),
    )  # fmt: skip
    summary.insert(
        summary.columns.get_loc("p_value_vs_baseline") + 1, "q_value_vs_baseline",
        benjamini_hochberg(summary["p_value_vs_baseline"].to_numpy(float)),
    )  # fmt: skip
    return summary


def heldout_traces(
    summary: pd.DataFrame,
    y: np.ndarray,
    volumes: np.ndarray,
    held_out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    roi_names: list[str],
) -> list[dict[str, Any]]:
    """Per held-out run, the series of the best and the worst ROI by mean r over subjects."""
    ranked = summary.dropna(subset=["mean_r"]).sort_values("mean_r", ascending=False)
    if ranked.empty:
        return []
    picks = {"best": ranked["roi"].iloc[0], "worst": ranked["roi"].iloc[-1]}
    traces = []
    for run, (idx, neurobolt, baseline) in held_out.items():
        for which, roi in picks.items():
            j = roi_names.index(roi)
            r = float(np.corrcoef(y[idx, j], neurobolt[:, j])[0, 1]) if idx.size > 2 else np.nan
            traces.append({
                "run": run, "roi": roi, "which": which, "volumes": volumes[idx],
                "measured": y[idx, j], "neurobolt": neurobolt[:, j],
                "baseline": baseline[:, j], "r": r,
            })  # fmt: skip
    return traces


def _atlas_file(source: str) -> Path | None:
    """Return the atlas file the targets were extracted with, or None if it is gone."""
    text = source.split("->")[-1].strip()
    path = Path(text) if text else None
    if path is None or not path.is_file():
        logger.info("atlas file %r not found from here; the group brain map is left out.", text)
        return None
    return path


def _brain_map(atlas_file: Path | None, summary: pd.DataFrame) -> str | None:
    """NeuroBOLT's mean held-out r painted on the atlas; None without the atlas."""
    if atlas_file is None:
        return None
    from bids_neurobolt.fmri.atlases import read_bids_atlas

    atlas = read_bids_atlas(atlas_file)
    r_by_roi = dict(zip(summary["roi"], summary["mean_r"].astype(float), strict=True))
    n = int(summary["n_subjects"].max())
    return figures.r_brain_map(atlas, r_by_roi, f"NeuroBOLT: mean r over {n} held-out subjects")


def verdict(summary: pd.DataFrame) -> str:
    """Say in words how NeuroBOLT compares with the ridge across held-out subjects.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`summarise`'s table.

    Returns
    -------
    str
        Mean r over ROIs of both models, and in how many ROIs NeuroBOLT is significantly
        above or below the HRF ridge (q < 0.05; one-sided sign-flip tests across
        subjects), with the smallest p-value the number of subjects allows.
    """
    n_subjects = int(summary["n_subjects"].max()) if len(summary) else 0
    if n_subjects < 2:
        return "Fewer than two held-out subjects: no comparison across subjects is possible."
    from bids_neurobolt.train.stats import benjamini_hochberg

    above = int((summary["q_value_vs_baseline"] < 0.05).sum())
    below_q = benjamini_hochberg(summary["p_value_below_baseline"].to_numpy(float))
    below = int((below_q < 0.05).sum())
    smallest = 1.0 / 2 ** min(n_subjects, 16)
    text = (
        f"Across {n_subjects} held-out subjects, NeuroBOLT's mean r over {len(summary)} ROIs "
        f"is {summary['mean_r'].mean():.3f} against {summary['mean_baseline_r'].mean():.3f} "
        f"for the HRF ridge and {summary['mean_fir_r'].mean():.3f} for the FIR ridge. "
        f"NeuroBOLT is significantly above the HRF ridge in {above} ROI(s) and significantly "
        f"below it in {below} (q < 0.05, sign-flip tests across subjects)."
    )
    if smallest > 0.05:
        text += (
            f" With {n_subjects} subjects the smallest possible p-value is {smallest:.3g}, "
            "so no difference can reach significance: add subjects to test one."
        )
    elif below == 0:
        text += " NeuroBOLT is not significantly below the ridge in any ROI."
    return text
