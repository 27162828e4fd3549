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


def atlas_overlay(mean_image, atlas_image, n_slices: int = 6) -> str:
    """Show the atlas (ROI numbers) over the mean BOLD image on a few axial slices.

    Parameters
    ----------
    mean_image : ndarray, shape (x, y, z)
        Mean BOLD volume.
    atlas_image : ndarray of int, shape (x, y, z)
        ROI number per voxel (0 outside every ROI).
    n_slices : int
        Axial slices shown, evenly spread over the slices the atlas covers.

    Returns
    -------
    str
        SVG text.
    """
    plt = _pyplot()
    covered = np.flatnonzero(np.asarray(atlas_image).any(axis=(0, 1)))
    if covered.size == 0:
        covered = np.arange(np.asarray(atlas_image).shape[2])
    picks = np.unique(np.linspace(covered[0], covered[-1], n_slices + 2).round().astype(int)[1:-1])
    fig, axes = plt.subplots(1, picks.size, figsize=(1.6 * picks.size, 2.0))
    for ax, z in zip(np.atleast_1d(axes), picks, strict=True):
        ax.imshow(np.asarray(mean_image)[:, :, z].T, origin="lower", cmap="gray")
        labels = np.ma.masked_equal(np.asarray(atlas_image)[:, :, z].T, 0)
        ax.imshow(labels, origin="lower", cmap="tab20", alpha=0.55, interpolation="nearest")
        ax.set_title(f"z = {z}", fontsize=7)
        ax.axis("off")
    fig.suptitle("Atlas on the mean BOLD image (voxel grid of the BOLD)", fontsize=9)
    return to_svg(fig)
