"""Matplotlib figures for the reports, returned as SVG text (no file paths here)."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import ArrayLike


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def to_svg(fig) -> str:
    """Render a figure to SVG text and close it."""
    plt = _pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def sync_intervals(
    volume_samples: ArrayLike, sfreq: float, repetition_time: float | None, tolerance: float
) -> str:
    """Plot the spacing of consecutive volume markers against RepetitionTime.

    Parameters
    ----------
    volume_samples : array-like of int
        EEG sample index of each volume marker.
    sfreq : float
        EEG sampling rate (Hz).
    repetition_time : float | None
        The BOLD RepetitionTime (s); the median spacing is used when None.
    tolerance : float
        The accepted deviation (s), drawn as a band.

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    samples = np.asarray(volume_samples, dtype=float)
    intervals = np.diff(samples) / sfreq
    reference = repetition_time if repetition_time else float(np.median(intervals))
    deviation_ms = (intervals - reference) * 1e3
    fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.axhspan(-tolerance * 1e3, tolerance * 1e3, color="tab:green", alpha=0.15, lw=0)
    ax.plot(np.arange(1, samples.size), deviation_ms, ".", color="tab:blue", ms=3)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("volume")
    ax.set_ylabel("interval - TR (ms)")
    ax.set_title(
        f"Volume-marker spacing vs TR = {reference:.4g} s "
        f"(band: tolerance ±{tolerance * 1e3:.3g} ms; one EEG sample = {1e3 / sfreq:.3g} ms)",
        fontsize=9,
    )
    return to_svg(fig)


def roi_traces(table, repetition_time: float, max_rois: int = 8) -> str:
    """Plot scaled ROI targets over time, one row per ROI (at most ``max_rois``).

    Parameters
    ----------
    table : pandas.DataFrame
        Targets, one row per volume, one column per ROI.
    repetition_time : float
        Seconds between rows.
    max_rois : int
        ROIs shown (the first ones, and the global signal when present).

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    columns = list(table.columns[: max_rois - 1])
    if table.columns[-1] not in columns:
        columns.append(table.columns[-1])
    times = np.arange(len(table)) * repetition_time
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 0.7 * len(columns) + 0.6), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), columns, strict=True):
        ax.plot(times, table[name].to_numpy(dtype=float), lw=0.8, color="tab:blue")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    shown = f"{len(columns)} of {table.shape[1]}" if table.shape[1] > len(columns) else "all"
    fig.suptitle(f"Scaled ROI targets ({shown} columns)", fontsize=9)
    return to_svg(fig)


def atlas_overlay(
    mean_image, atlas_image, names=(), n_slices: int = 6, max_legend: int = 24
) -> str:
    """Show the atlas's ROIs in colour over the mean BOLD image on a few axial slices.

    Parameters
    ----------
    mean_image : ndarray, shape (x, y, z)
        Mean BOLD volume.
    atlas_image : ndarray of int, shape (x, y, z)
        ROI number per voxel (position in ``names`` + 1; 0 outside every ROI).
    names : sequence of str
        ROI names, for the legend.
    n_slices : int
        Axial slices shown, evenly spread over the slices the atlas covers.
    max_legend : int
        Largest number of ROIs named in the legend (beyond it, colours repeat and the
        title says how many ROIs there are).

    Returns
    -------
    str
        SVG text.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    atlas_image = np.asarray(atlas_image)
    covered = np.flatnonzero(atlas_image.any(axis=(0, 1)))
    if covered.size == 0:
        covered = np.arange(atlas_image.shape[2])
    picks = np.unique(np.linspace(covered[0], covered[-1], n_slices + 2).round().astype(int)[1:-1])
    palette = plt.get_cmap("tab20").colors + plt.get_cmap("Set1").colors
    n_rois = int(atlas_image.max())
    colours = ListedColormap([palette[i % len(palette)] for i in range(max(n_rois, 1))])
    fig, axes = plt.subplots(1, picks.size, figsize=(1.6 * picks.size + 2.2, 2.2))
    for ax, z in zip(np.atleast_1d(axes), picks, strict=True):
        ax.imshow(np.asarray(mean_image)[:, :, z].T, origin="lower", cmap="gray")
        labels = np.ma.masked_equal(atlas_image[:, :, z].T, 0)
        ax.imshow(labels - 1, origin="lower", cmap=colours, vmin=-0.5, vmax=max(n_rois, 1) - 0.5,
                  alpha=0.8, interpolation="nearest")  # fmt: skip
        ax.set_title(f"z = {z}", fontsize=7)
        ax.axis("off")
    title = "Atlas on the mean BOLD image (voxel grid of the BOLD)"
    shown = list(names)[: min(n_rois, max_legend)]
    if shown:
        handles = [Patch(color=colours(i), label=name) for i, name in enumerate(shown)]
        np.atleast_1d(axes)[-1].legend(handles=handles, fontsize=6, loc="upper left",
                                       bbox_to_anchor=(1.02, 1.0), frameon=False)  # fmt: skip
    if n_rois > len(shown):
        title += f"; {n_rois} ROIs, colours repeat"
    fig.suptitle(title, fontsize=9)
    return to_svg(fig)


def clean_spectrum(
    spectra: dict, slice_hz: ArrayLike = (), volume_hz: ArrayLike = (), sfreq: float | None = None
) -> str:
    """Plot the median EEG power spectrum before and after artifact removal.

    Parameters
    ----------
    spectra : dict
        ``freqs`` and median PSDs ``raw``, ``after_gradient``, ``cleaned`` and, for a
        simulation, ``truth`` (µV²/Hz), as in ``CleanResult.spectra``.
    slice_hz, volume_hz : array-like of float
        Slice and volume harmonics, marked on the frequency axis.
    sfreq : float | None
        Output rate; its Nyquist frequency is marked when given.

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    freqs = np.asarray(spectra["freqs"], dtype=float)
    keep = freqs > 0
    fig, ax = plt.subplots(figsize=(8, 3.2))
    styles = {
        "raw": ("raw", "tab:red", 0.9),
        "after_gradient": ("after gradient removal", "tab:orange", 0.9),
        "cleaned": ("cleaned (gradient + BCG)", "tab:blue", 1.2),
        "truth": ("ground truth (simulation)", "k", 0.8),
    }
    for key, (label, color, width) in styles.items():
        if key in spectra:
            ax.semilogy(
                freqs[keep], np.asarray(spectra[key])[keep], color=color, lw=width, label=label
            )
    for i, f in enumerate(np.asarray(slice_hz, dtype=float)):
        ax.axvline(
            f, color="tab:purple", ls=":", lw=0.8, label="slice harmonics" if i == 0 else None
        )
    for i, f in enumerate(np.asarray(volume_hz, dtype=float)[:3]):
        ax.axvline(
            f, color="tab:green", ls=":", lw=0.6, label="volume harmonics" if i == 0 else None
        )
    if sfreq:
        ax.axvline(sfreq / 2, color="0.5", lw=0.6)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("median PSD over EEG channels (µV²/Hz)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("EEG spectrum during the scan, before and after MR-artifact removal", fontsize=9)
    return to_svg(fig)


def clean_traces(
    raw: ArrayLike,
    raw_sfreq: float,
    clean: ArrayLike,
    clean_sfreq: float,
    names: list[str],
    start: float,
) -> str:
    """Plot a few seconds of raw and cleaned EEG, side by side.

    Parameters
    ----------
    raw : array, shape (n_channels, n_raw)
        Raw EEG (µV) at ``raw_sfreq``.
    raw_sfreq : float
        Native rate (Hz).
    clean : array, shape (n_channels, n_clean)
        The same channels and seconds, cleaned (µV), at ``clean_sfreq``.
    clean_sfreq : float
        Output rate (Hz).
    names : list of str
        Channel names.
    start : float
        Time of the first sample (s from the start of the recording).

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    raw, clean = np.asarray(raw, dtype=float), np.asarray(clean, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 * len(names) + 1.2), sharey=False)
    for ax, data, sfreq, title in (
        (axes[0], raw, raw_sfreq, "raw"),
        (axes[1], clean, clean_sfreq, "cleaned"),
    ):
        centred = data - data.mean(axis=1, keepdims=True)
        step = 2.5 * float(np.percentile(np.abs(centred), 99)) or 1.0
        times = start + np.arange(data.shape[1]) / sfreq
        for k in range(data.shape[0]):
            ax.plot(times, centred[k] - k * step, lw=0.5, color="tab:blue")
        ax.set_yticks([-k * step for k in range(len(names))], names, fontsize=7)
        ax.set_xlabel("time (s)")
        ax.set_title(f"{title} (channel spacing {step:.3g} µV)", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    return to_svg(fig)


def bcg_detection(
    ecg: ArrayLike | None,
    sfreq: float,
    beats: ArrayLike,
    template: dict | None,
    window: float = 10.0,
) -> str:
    """Plot R-peak detection on the cleaned ECG and the BCG template before and after removal.

    Parameters
    ----------
    ecg : array | None
        The gradient-cleaned ECG (µV) at ``sfreq``; None when the recording has none.
    sfreq : float
        Rate of ``ecg`` and ``beats`` (Hz).
    beats : array of int
        Heartbeats (samples at ``sfreq``).
    template : dict | None
        ``times``, ``before``, ``after`` and ``name`` (``CleanResult.spectra["bcg_template"]``).
    window : float
        Seconds of ECG shown, from the middle of the recording.

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6), gridspec_kw={"width_ratios": [2, 1]})
    beats = np.asarray(beats, dtype=np.int64)
    if ecg is not None:
        ecg = np.asarray(ecg, dtype=float)
        first = max(0, ecg.size // 2 - int(window * sfreq / 2))
        last = min(ecg.size, first + int(window * sfreq))
        times = np.arange(first, last) / sfreq
        axes[0].plot(times, ecg[first:last], lw=0.6, color="0.3")
        shown = beats[(beats >= first) & (beats < last)]
        axes[0].plot(shown / sfreq, ecg[shown], "v", color="tab:red", ms=5, label="R-peaks")
        axes[0].legend(fontsize=7, loc="upper right")
        axes[0].set_title(f"ECG after gradient removal: {beats.size} beats detected", fontsize=9)
        axes[0].set_ylabel("µV")
    else:
        axes[0].text(0.5, 0.5, "no ECG: heartbeats derived from the EEG", ha="center", va="center")
        axes[0].set_title(f"{beats.size} heartbeats", fontsize=9)
    axes[0].set_xlabel("time (s)")
    if template is not None:
        times = np.asarray(template["times"], dtype=float)
        axes[1].plot(times, template["before"], color="tab:red", lw=1, label="before")
        axes[1].plot(times, template["after"], color="tab:blue", lw=1, label="after")
        axes[1].axvline(0, color="0.5", lw=0.5)
        axes[1].legend(fontsize=7)
        axes[1].set_title(f"BCG template, {template['name']}", fontsize=9)
        axes[1].set_xlabel("time from beat (s)")
        axes[1].set_ylabel("µV")
    else:
        axes[1].axis("off")
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return to_svg(fig)


def training_curves(history, best_epoch: int) -> str:
    """Plot the training and validation loss per epoch, the kept epoch marked.

    Parameters
    ----------
    history : pandas.DataFrame
        ``FitResult.history``: ``epoch``, ``train_loss``, ``val_loss``, ``val_pearson_r``.
    best_epoch : int
        The epoch whose weights were kept (lowest validation loss).

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    fig, (loss_ax, r_ax) = plt.subplots(1, 2, figsize=(9, 2.8))
    epochs = history["epoch"].to_numpy()
    loss_ax.plot(epochs, history["train_loss"], "o-", ms=3, color="tab:blue", label="train")
    if history["val_loss"].notna().any():
        loss_ax.plot(
            epochs, history["val_loss"], "o-", ms=3, color="tab:orange", label="validation"
        )
        r_ax.plot(epochs, history["val_pearson_r"], "o-", ms=3, color="tab:orange")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, r_ax):
        ax.axvline(best_epoch, color="0.5", ls=":", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.spines[["top", "right"]].set_visible(False)
    loss_ax.set_ylabel("MSE")
    loss_ax.legend(fontsize=7)
    loss_ax.set_title(f"Loss (dotted: epoch {best_epoch}, kept)", fontsize=9)
    r_ax.set_ylabel("mean r over ROIs")
    r_ax.set_title("Validation correlation", fontsize=9)
    return to_svg(fig)


def predicted_vs_measured(
    times: ArrayLike, measured, predicted, baseline=None, max_rois: int = 6
) -> str:
    """Plot predicted and measured ROI BOLD on the test part, one row per ROI.

    Parameters
    ----------
    times : array-like of float
        Time (s) of each test volume.
    measured, predicted : pandas.DataFrame
        Test rows of the targets and of NeuroBOLT's predictions (same columns).
    baseline : pandas.DataFrame | None
        The ridge baseline's predictions of the same rows.
    max_rois : int
        ROIs shown (the first ones, and the last column, the global signal).

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    columns = list(measured.columns[: max_rois - 1])
    if measured.columns[-1] not in columns:
        columns.append(measured.columns[-1])
    times = np.asarray(times, dtype=float)
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 0.9 * len(columns) + 0.8), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), columns, strict=True):
        y, p = measured[name].to_numpy(float), predicted[name].to_numpy(float)
        ax.plot(times, y, color="k", lw=1, label="measured")
        ax.plot(times, p, color="tab:red", lw=1, label="NeuroBOLT")
        if baseline is not None:
            ax.plot(times, baseline[name].to_numpy(float), color="tab:gray", lw=0.8, ls="--",
                    label="ridge baseline")  # fmt: skip
        r = np.corrcoef(y, p)[0, 1] if y.size > 2 and np.std(p) > 0 else np.nan
        ax.set_ylabel(f"{name}\nr = {r:.2f}", rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    first = np.atleast_1d(axes)[0]
    first.legend(fontsize=7, loc="upper right", ncol=3)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    fig.suptitle("Test part: predicted vs measured ROI BOLD (scaled)", fontsize=9)
    return to_svg(fig)


def roi_correlations(metrics, split: str = "test", unit: str = "volumes") -> str:
    """Correlation per ROI with its 95 % CI: NeuroBOLT and the ridge baselines.

    Parameters
    ----------
    metrics : pandas.DataFrame
        The ``desc-neurobolt_metrics.tsv`` table (``roi``, ``split``, ``pearson_r`` and,
        when present, ``baseline_r``, ``fir_r``, their ``_ci_low``/``_ci_high`` and
        ``n_eff``).
    split : str
        The set shown.
    unit : str
        What ``n`` counts (in the title).

    Returns
    -------
    str
        SVG text. ROIs whose r is n/a (too few effective samples) are marked as such.
    """
    plt = _pyplot()
    rows = metrics[metrics["split"] == split].reset_index(drop=True)
    names = rows["roi"].tolist()
    x = np.arange(len(names))
    models = [
        (column, label, color)
        for column, label, color in (
            ("pearson_r", "NeuroBOLT", "tab:red"),
            ("baseline_r", "HRF ridge", "tab:gray"),
            ("fir_r", "FIR ridge", "tab:blue"),
        )
        if column in rows and (column == "pearson_r" or rows[column].notna().any())
    ]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(names) + 2.5), 3.2))
    for i, (column, label, color) in enumerate(models):
        offset = (i - (len(models) - 1) / 2) * width
        values = rows[column].to_numpy(dtype=float)
        low_name = "pearson_r_ci_low" if column == "pearson_r" else f"{column}_ci_low"
        high_name = "pearson_r_ci_high" if column == "pearson_r" else f"{column}_ci_high"
        error = None
        if low_name in rows and high_name in rows:
            low, high = rows[low_name].to_numpy(float), rows[high_name].to_numpy(float)
            error = np.vstack([values - low, high - values])
        ax.bar(x + offset, np.nan_to_num(values), width, color=color, label=label,
               yerr=error, error_kw={"lw": 0.8, "capsize": 2})  # fmt: skip
    if "n_eff" in rows:
        for j in np.flatnonzero(rows["pearson_r"].isna().to_numpy()):
            ax.text(x[j], 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("Pearson r (95 % CI)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    title = f"Correlation per ROI ({split}, {int(rows['n'].iloc[0])} {unit}"
    if "n_eff" in rows and rows["n_eff"].notna().any():
        title += f", median n_eff {float(rows['n_eff'].median()):.0f}"
    ax.set_title(title + ")", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return to_svg(fig)


#: Colour and label of each model in the comparison figures.
MODEL_STYLES = (
    ("", "NeuroBOLT", "tab:red"),
    ("baseline_", "HRF ridge", "tab:gray"),
    ("fir_", "FIR ridge", "tab:blue"),
)


def forest_plot(summary) -> str:
    """Mean r over held-out subjects per ROI with 95 % CIs, one row per ROI (forest plot).

    Parameters
    ----------
    summary : pandas.DataFrame
        The group summary: ``roi``, ``n_subjects`` and ``mean_r``, ``mean_baseline_r``,
        ``mean_fir_r`` with their ``_ci_low`` and ``_ci_high``.

    Returns
    -------
    str
        SVG text: NeuroBOLT, HRF ridge and FIR ridge side by side on a shared r axis.
    """
    plt = _pyplot()
    names = summary["roi"].tolist()
    y = np.arange(len(names))[::-1].astype(float)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(names) + 1.3))
    for i, (prefix, label, color) in enumerate(MODEL_STYLES):
        column = f"mean_{prefix}r"
        if column not in summary or summary[column].isna().all():
            continue
        mean = summary[column].to_numpy(float)
        low = summary[f"{column}_ci_low"].to_numpy(float)
        high = summary[f"{column}_ci_high"].to_numpy(float)
        offset = (1 - i) * 0.22
        ax.errorbar(mean, y + offset, xerr=np.vstack([mean - low, high - mean]), fmt="o",
                    ms=4, color=color, lw=1, capsize=2, label=label)  # fmt: skip
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("mean Pearson r over held-out subjects (95 % CI)")
    n = int(summary["n_subjects"].max()) if len(summary) else 0
    ax.set_title(f"Held-out subjects (n = {n}): correlation per ROI", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return to_svg(fig)


def r_matrix(metrics) -> str:
    """Heat map of the held-out r per run (rows) and ROI (columns), NeuroBOLT and HRF ridge.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Group metrics: ``run``, ``roi``, ``pearson_r`` and ``baseline_r``.

    Returns
    -------
    str
        SVG text; both panels share one colour scale (-1 to 1), values written in cells.
    """
    plt = _pyplot()
    panels = [("pearson_r", "NeuroBOLT"), ("baseline_r", "HRF ridge")]
    panels = [(c, t) for c, t in panels if c in metrics]
    tables = [
        metrics.pivot_table(index="run", columns="roi", values=c, sort=False, dropna=False)
        for c, _ in panels
    ]
    n_runs, n_rois = tables[0].shape
    fig, axes = plt.subplots(
        1, len(panels), figsize=(0.65 * n_rois * len(panels) + 3.0, 0.45 * n_runs + 2.2),
        squeeze=False, sharey=True,
    )  # fmt: skip
    image = None
    for ax, table, (_, title) in zip(axes[0], tables, panels, strict=True):
        values = table.to_numpy(float)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="w" if abs(np.nan_to_num(value)) > 0.6 else "k")  # fmt: skip
        ax.set_xticks(range(n_rois), table.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n_runs), table.index, fontsize=7)
        ax.set_xlabel("ROI")
        ax.set_title(title, fontsize=9)
    axes[0, 0].set_ylabel("held-out run")
    fig.colorbar(image, ax=axes[0].tolist(), label="Pearson r", shrink=0.8)
    return to_svg(fig)


def paint_rois(atlas, values):
    """Return an image holding each ROI's value on its voxels.

    Parameters
    ----------
    atlas : bids_neurobolt.fmri.atlases.Atlas
        A label atlas (each ROI's voxels) or probabilistic maps (each voxel takes the
        ROI of its largest weight, where that weight is above a fifth of the ROI's peak).
    values : mapping of str to float
        The value of each ROI; ROIs absent or NaN stay 0.

    Returns
    -------
    nibabel.Nifti1Image
        A 3-D float image on the atlas grid.
    """
    import nibabel as nib

    data = np.asarray(atlas.image.dataobj)
    painted = np.zeros(data.shape[:3], dtype=np.float32)
    if atlas.kind == "labels":
        for name, index in zip(atlas.names, atlas.indices, strict=True):
            value = values.get(name, np.nan)
            if np.isfinite(value):
                painted[data == index] = value
    else:
        stack = data[..., list(atlas.indices)].astype(np.float32)
        winner = stack.argmax(axis=-1)
        peak = stack.max(axis=(0, 1, 2))
        strong = np.take_along_axis(stack, winner[..., None], axis=-1)[..., 0] > 0.2 * peak[winner]
        for k, name in enumerate(atlas.names):
            value = values.get(name, np.nan)
            if np.isfinite(value):
                painted[(winner == k) & strong] = value
    return nib.Nifti1Image(painted, atlas.image.affine)


def r_brain_map(atlas, r_by_roi, title: str) -> str:
    """Show a correlation per ROI painted on the atlas over the MNI template (nilearn).

    Parameters
    ----------
    atlas : bids_neurobolt.fmri.atlases.Atlas
        The atlas the ROI targets were extracted with (see :func:`paint_rois`).
    r_by_roi : mapping of str to float
        The value of each ROI (ROIs absent or NaN are left blank).
    title : str
        Figure title.

    Returns
    -------
    str
        SVG text: axial slices through the painted ROIs, a diverging map from -1 to 1.
    """
    import nibabel as nib
    from nilearn import plotting

    plt = _pyplot()
    image = paint_rois(atlas, r_by_roi)
    painted = np.asarray(image.dataobj)
    covered = np.flatnonzero(np.abs(painted).sum(axis=(0, 1)) > 0)
    fig = plt.figure(figsize=(9, 2.4))
    if covered.size:
        picks = np.unique(np.linspace(covered[0], covered[-1], 6).round().astype(int))
        cuts = [float(nib.affines.apply_affine(image.affine, [0, 0, z])[2]) for z in picks]
    else:
        cuts = [-20.0, 0.0, 20.0, 40.0]
    plotting.plot_stat_map(
        image, display_mode="z", cut_coords=cuts, cmap="RdBu_r", vmin=-1, vmax=1,
        symmetric_cbar=True, threshold=1e-6, figure=fig, title=title, annotate=True,
        draw_cross=False, colorbar=True,
    )  # fmt: skip
    return to_svg(fig)


def heldout_traces(traces, repetition_time: float) -> str:
    """Measured and predicted BOLD of each held-out run for the best and the worst ROI.

    Parameters
    ----------
    traces : list of dict
        One per held-out run and ROI shown: ``run``, ``roi``, ``which`` ("best" or
        "worst"), ``volumes`` (volume numbers), ``measured``, ``neurobolt`` and
        ``baseline`` (arrays), ``r`` (NeuroBOLT's r on the run).
    repetition_time : float
        Seconds per volume (time axis).

    Returns
    -------
    str
        SVG text: a row per held-out run, a column per ROI kind.
    """
    plt = _pyplot()
    runs = list(dict.fromkeys(t["run"] for t in traces))
    kinds = ["best", "worst"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 1.5 * len(runs) + 1.0),
                             squeeze=False, sharey=True)  # fmt: skip
    for t in traces:
        ax = axes[runs.index(t["run"]), kinds.index(t["which"])]
        seconds = np.asarray(t["volumes"], float) * repetition_time
        ax.plot(seconds, t["measured"], color="k", lw=1, label="measured")
        ax.plot(seconds, t["neurobolt"], color="tab:red", lw=1, label="NeuroBOLT")
        ax.plot(seconds, t["baseline"], color="tab:gray", lw=0.8, ls="--", label="HRF ridge")
        ax.set_title(f"{t['run']}: {t['roi']} ({t['which']} ROI), r = {t['r']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("BOLD (scaled)", fontsize=8)
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("Held-out subjects: measured vs predicted BOLD (best and worst ROI by mean r)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return to_svg(fig)


def fold_curves(history) -> str:
    """Training and validation loss of every group fold and of the all-subjects model.

    Parameters
    ----------
    history : pandas.DataFrame
        The group history table: ``fold``, ``epoch``, ``train_loss``, ``val_loss``.

    Returns
    -------
    str
        SVG text; one panel per fold on a shared loss axis, integer epoch ticks.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    folds = list(dict.fromkeys(history["fold"].astype(str)))
    cols = min(4, len(folds))
    rows = int(np.ceil(len(folds) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.2, 2.0 * rows + 0.6),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, fold in zip(axes.ravel(), folds, strict=False):
        part = history[history["fold"].astype(str) == fold]
        ax.plot(part["epoch"], part["train_loss"], "o-", ms=3, color="tab:blue", label="train")
        if part["val_loss"].notna().any():
            ax.plot(part["epoch"], part["val_loss"], "o-", ms=3, color="tab:orange",
                    label="validation")  # fmt: skip
        ax.set_title("all subjects" if fold == "all" else f"fold {fold}", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("MSE", fontsize=8)
    for ax in axes.ravel()[len(folds) :]:
        ax.axis("off")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return to_svg(fig)
