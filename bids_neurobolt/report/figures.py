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
