"""Does NeuroBOLT predict BOLD from EEG better than linear models? Simulations over seeds.

For every coupling of :mod:`bids_neurobolt.simulate.couplings` (the simulator's linear
band-power coupling; ROI-specific HRFs with lags up to 10 s; a nonlinear interaction of
band powers; a spatial pattern that no single channel's band power carries; and two
controls: BOLD of an unrelated recording, and BOLD shifted by 5 minutes) and every seed,
one simulated run is evaluated exactly as the app's ``model`` stage does with
``--split blocked-cv``: 5 contiguous folds with 20 s gaps, every window predicted once by
a model that did not train on it, by

- **NeuroBOLT** (a CPU-sized architecture unless ``--model paper``),
- the **HRF ridge** (log band power convolved with the canonical HRF and derivative),
- the **FIR ridge** (log band power at every 1 s lag: no assumed HRF), and
- the **oracle**: ridge regression on the true simulated drive (the part of the BOLD
  this EEG determines through the coupling), the most any model of the EEG could reach.

``--inter-subject N`` adds the inter-subject setting: N simulated subjects per seed, each
tested once by models trained on the others (one validation subject). ``--pipeline K``
runs the whole app (raw simulated scanner data: sync, gradient and BCG removal, ROI
extraction, model) on K seeds of the simulator's own dataset and reads its metrics.

Printed: one table with, per coupling and model, the mean over seeds of the ROI-averaged
out-of-sample r with a 95 % t interval over seeds; the paired differences NeuroBOLT -
ridge (CI over seeds); and the share of ROI x seed pairs with p < 0.05 (phase-randomised
null), which must stay near 5 % on the controls. Raw per-ROI rows go to ``--out``.

Usage::

    python benchmarks/bench_science.py --seeds 10 --neurobolt-seeds 3 --channels 8 --duration 600
    python benchmarks/bench_science.py --couplings nonlinear spatial --model paper --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODELS = ("neurobolt", "baseline", "fir", "oracle")
LABELS = {"neurobolt": "NeuroBOLT", "baseline": "HRF ridge", "fir": "FIR ridge", "oracle": "oracle"}


def architecture(name: str) -> Any:
    from bids_neurobolt.model import NeuroBOLTConfig

    return {
        "paper": NeuroBOLTConfig(),
        "small": NeuroBOLTConfig(
            conv_channels=4, depth=4, heads=4, spectral_depth=2, spectral_heads=4
        ),
        "sloppy": NeuroBOLTConfig.sloppy(),
    }[name]


def recipe(opts: argparse.Namespace, seed: int, batch: int) -> Any:
    """The app's from-scratch recipe, with any epochs, warm-up or rate given instead."""
    from bids_neurobolt.train import TrainConfig

    given = {"epochs": opts.epochs, "warmup_epochs": opts.warmup, "lr": opts.lr}
    config = TrainConfig.for_start(
        False, batch_size=batch, seed=seed, **{k: v for k, v in given.items() if v is not None}
    )
    return dataclasses.replace(config, warmup_epochs=min(config.warmup_epochs, config.epochs - 1))


def trainer(windows, targets, ch_names, roi_names, opts, seed, batch):
    """``train(split, keep_epoch=None)`` as the app's model stage builds it."""
    from bids_neurobolt.train import Runtime, train_neurobolt

    runtime = Runtime(device=opts.device, precision=opts.precision, progress=False)

    def train(split, keep_epoch=None):
        return train_neurobolt(
            windows,
            targets,
            split,
            ch_names=ch_names,
            roi_names=roi_names,
            seed=seed,
            model_config=architecture(opts.model),
            train_config=recipe(opts, seed, batch),
            runtime=runtime,
            per_roi=opts.per_roi,
            keep_epoch=keep_epoch,
        )

    return train


def score(y, predictions, groups, seed) -> list[dict[str, Any]]:
    """Per group (run) and ROI: r and the phase-randomised p of every model."""
    from bids_neurobolt.train import pearson_r
    from bids_neurobolt.train.stats import effective_sample_sizes, phase_randomised_p

    rows = []
    for group in np.unique(groups):
        idx = np.flatnonzero(groups == group)
        for model, values in predictions.items():
            r = pearson_r(y[idx], values[idx])
            p = np.atleast_1d(phase_randomised_p(y[idx], values[idx], seed=seed))
            n_eff = effective_sample_sizes(y[idx], values[idx])
            for j in range(y.shape[1]):
                rows.append(
                    {
                        "group": int(group),
                        "roi": j,
                        "model": model,
                        "r": r[j],
                        "p": p[j],
                        "n_eff": n_eff[j],
                    }
                )
    return rows


def linear_predictions(features: dict[str, np.ndarray], y, splits) -> dict[str, np.ndarray]:
    """Out-of-sample ridge predictions from each feature set, fold by fold.

    The ridges' features (``baseline``: HRF, ``fir``: FIR) give what evaluate_run makes;
    the true drive gives the oracle.
    """
    from bids_neurobolt.train.baselines import baseline_predictions

    out = {name: np.full(y.shape, np.nan, np.float32) for name in features}
    for split in splits:
        for name, x in features.items():
            out[name][split.test] = baseline_predictions(x, y, split.train, split.val)[split.test]
    return out


def intra_scan(coupling: str, seed: int, opts: argparse.Namespace) -> list[dict[str, Any]]:
    from bids_neurobolt.simulate.couplings import simulate_coupled_run
    from bids_neurobolt.train import gap_for_tr, make_windows
    from bids_neurobolt.train.baselines import baseline_features
    from bids_neurobolt.train.evaluation import evaluate_run, fold_labels, make_run_splits
    from bids_neurobolt.train.metrics import centre_within

    run = simulate_coupled_run(
        coupling,
        duration=opts.duration,
        tr=opts.tr,
        seed=seed,
        noise=opts.noise,
        n_channels=opts.channels,
    )
    windows = make_windows(run.eeg, run.markers, ch_names=list(run.ch_names))
    y = run.targets[windows.volumes].astype(np.float32)
    drive = run.drive[windows.volumes]
    splits = make_run_splits("blocked-cv", len(windows), gap_for_tr(opts.tr))
    if seed < opts.first_seed + opts.neurobolt_seeds:
        train = trainer(windows.data, y, list(run.ch_names), list(run.roi_names), opts, seed, 16)
        result = evaluate_run(
            windows.data,
            y,
            splits,
            train=train,
            roi_names=list(run.roi_names),
            seed=seed,
            final=False,
        )
        predictions = dict(result.predictions)
    else:  # the linear models only (NeuroBOLT's rows are left out of this seed)
        features = {
            name: baseline_features(windows.data, kind=kind)
            for name, kind in (("baseline", "hrf"), ("fir", "fir"))
        }
        predictions = linear_predictions(features, y, splits)
    predictions.update(linear_predictions({"oracle": drive}, y, splits))
    # as the app's metrics: correlations within folds (each fold model has its own intercept)
    blocks = fold_labels(splits, len(y))
    centred = {name: centre_within(values, blocks) for name, values in predictions.items()}
    return score(centre_within(y, blocks), centred, np.zeros(len(y), dtype=int), seed)


def inter_subject(coupling: str, seed: int, opts: argparse.Namespace) -> list[dict[str, Any]]:
    from bids_neurobolt.simulate.couplings import simulate_coupled_run
    from bids_neurobolt.train import Split, concatenate, make_windows
    from bids_neurobolt.train.baselines import baseline_features, baseline_predictions
    from bids_neurobolt.train.evaluation import baseline_fold_predictions

    n = opts.inter_subject
    runs = [
        simulate_coupled_run(
            coupling,
            duration=opts.duration,
            tr=opts.tr,
            seed=seed,
            noise=opts.noise,
            subject=s,
            n_channels=opts.channels,
        )
        for s in range(1, n + 1)
    ]
    parts = [make_windows(r.eeg, r.markers, ch_names=list(r.ch_names)) for r in runs]
    windows, subject = concatenate(parts)
    y = np.concatenate([r.targets[p.volumes] for r, p in zip(runs, parts, strict=True)])
    drive = np.concatenate([r.drive[p.volumes] for r, p in zip(runs, parts, strict=True)])
    y = y.astype(np.float32)
    ch_names, roi_names = list(runs[0].ch_names), list(runs[0].roi_names)
    features = {kind: baseline_features(windows, kind=kind) for kind in ("hrf", "fir")}
    with_neurobolt = seed < opts.first_seed + opts.neurobolt_seeds
    models = MODELS if with_neurobolt else tuple(m for m in MODELS if m != "neurobolt")
    predictions = {m: np.full(y.shape, np.nan, np.float32) for m in models}
    train = trainer(windows, y, ch_names, roi_names, opts, seed, 64)
    for test in range(n):
        val = (test + 1) % n
        split = Split(
            np.flatnonzero((subject != test) & (subject != val)),
            np.flatnonzero(subject == val),
            np.flatnonzero(subject == test),
        )
        rows = split.test
        if with_neurobolt:
            predictions["neurobolt"][rows] = train(split).predictions[rows]
        for name, values in baseline_fold_predictions(features, y, split).items():
            predictions[name][rows] = values[rows]
        predictions["oracle"][rows] = baseline_predictions(drive, y, split.train, split.val)[rows]
    return score(y, predictions, subject, seed)


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """95 % Student-t CI of the mean over seeds (independent simulations).

    With the two or three seeds a CPU session affords NeuroBOLT, a percentile bootstrap
    would be far too narrow; the t interval is honest at any number of seeds.
    """
    from scipy import stats

    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan, np.nan
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per setting, coupling and model: mean r over seeds with CI; paired differences."""
    out = []
    keys = ["setting", "coupling"]
    for (setting, coupling), part in rows.groupby(keys, sort=False):
        per_seed = part.groupby(["seed", "model"])["r"].mean().unstack("model")
        per_seed = per_seed.reindex(columns=list(MODELS))
        line: dict[str, Any] = {
            "setting": setting,
            "coupling": coupling,
            "seeds": per_seed.shape[0],
        }
        for model in MODELS:
            values = per_seed[model].dropna().to_numpy()
            low, high = mean_ci(values)
            line[model] = f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"
            significant = part.loc[part["model"] == model, "p"] < 0.05
            line[f"{model} p<.05"] = f"{100 * significant.mean():.0f}%"
        line["NeuroBOLT seeds"] = int(per_seed["neurobolt"].notna().sum())
        for other in ("baseline", "fir"):
            diff = (per_seed["neurobolt"] - per_seed[other]).dropna().to_numpy()
            low, high = mean_ci(diff)
            line[f"NB-{LABELS[other]}"] = f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]"
        out.append(line)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    from bids_neurobolt.simulate.couplings import COUPLINGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--couplings", nargs="+", default=list(COUPLINGS), choices=COUPLINGS)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--neurobolt-seeds",
        type=int,
        default=10,
        help="train NeuroBOLT on the first N seeds only (the ridges and the oracle run on all)",
    )
    parser.add_argument("--channels", type=int, default=26, help="EEG channels simulated")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=900.0, help="run length (s)")
    parser.add_argument("--tr", type=float, default=2.1)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--model", choices=("paper", "small", "sloppy"), default="sloppy")
    parser.add_argument(
        "--per-roi", action="store_true", help="one NeuroBOLT per ROI (the paper's setup)"
    )
    parser.add_argument("--epochs", type=int, help="default: the app's from-scratch recipe")
    parser.add_argument("--warmup", type=int, help="warm-up epochs (default: the app's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the app's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--inter-subject",
        type=int,
        default=0,
        help="subjects per seed for the inter-subject setting (0: skip)",
    )
    parser.add_argument("--skip-intra", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench_science_rows.tsv"))
    parser.add_argument(
        "--summarise",
        type=Path,
        metavar="ROWS_TSV",
        help="print the table of the rows an earlier (or running) run wrote",
    )
    opts = parser.parse_args(argv)
    if opts.summarise is not None:
        rows = pd.read_csv(opts.summarise, sep="\t")
        print(f"{rows.groupby(['setting', 'coupling'])['seed'].nunique().to_dict()} seeds")
        print(summarise(rows).to_string(index=False))
        return

    import torch

    torch.set_num_threads(opts.threads)
    settings = [] if opts.skip_intra else [("intra-scan", intra_scan)]
    if opts.inter_subject:
        settings.append((f"inter-subject ({opts.inter_subject} subjects)", inter_subject))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    # seeds outermost: an interrupted run still covers every coupling with its first seeds
    for setting, evaluate in settings:
        for seed in range(opts.first_seed, opts.first_seed + opts.seeds):
            for coupling in opts.couplings:
                t0 = time.perf_counter()
                for row in evaluate(coupling, seed, opts):
                    rows.append({"setting": setting, "coupling": coupling, "seed": seed, **row})
                pd.DataFrame(rows).to_csv(opts.out, sep="\t", index=False)
                done = pd.DataFrame(rows).query("coupling == @coupling and seed == @seed")
                means = done.groupby("model")["r"].mean()
                print(
                    f"{setting:<26} {coupling:<18} seed {seed:>2}: "
                    + "  ".join(f"{LABELS[m]} {means[m]:+.3f}" for m in MODELS if m in means)
                    + f"  ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    table = summarise(pd.DataFrame(rows))
    used = recipe(opts, opts.first_seed, 16)
    print(
        f"\nScience benchmark: model '{opts.model}'{' per ROI' if opts.per_roi else ''}, "
        f"{used.epochs} epochs (lr {used.lr:g}, "
        f"warm-up {used.warmup_epochs}), {opts.duration:.0f} s runs at TR {opts.tr} s, noise "
        f"{opts.noise}, {opts.channels} channels, device {opts.device}; NeuroBOLT on the first "
        f"{opts.neurobolt_seeds} seed(s); {time.perf_counter() - started:.0f} s in all."
    )
    print("Mean over seeds of the ROI-averaged out-of-sample r [95 % t interval over seeds];")
    print("NB-x: paired difference NeuroBOLT - x; p<.05: share of ROI x seed (x subject) tests.")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
