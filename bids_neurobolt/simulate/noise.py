"""Smooth random processes with a known variance, shared by the simulator's modules.

White Gaussian noise filtered with a normalised Gaussian kernel ``w`` has variance
``sum(w**2)`` and autocorrelation ``(w * w)(lag) / sum(w**2)``. Dividing by the square root
of that variance (rather than by the sample SD of each realisation) gives processes whose
scale does not depend on how long they are: a 20 s run and a 20 min run of the same
process have the same expected variance, and a short one simply varies less.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

_TRUNCATE = 4.0  # kernel radius in SDs (scipy's default)


def gaussian_kernel(sigma: float) -> NDArray[np.float64]:
    """Return the normalised kernel :func:`scipy.ndimage.gaussian_filter1d` uses for ``sigma``."""
    radius = int(_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float
) -> NDArray[np.float64]:
    """Gaussian-smoothed white noise along axis 0, with unit variance in expectation.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    shape : tuple of int
        Output shape; smoothing runs along the first axis.
    sigma : float
        Kernel SD in samples.

    Returns
    -------
    ndarray
    """
    smooth = gaussian_filter1d(
        rng.standard_normal(shape), sigma=sigma, axis=0, mode="reflect", truncate=_TRUNCATE
    )
    return smooth / np.sqrt((gaussian_kernel(sigma) ** 2).sum())


def filtered_variance(impulse_response: NDArray[np.float64], sigma: float) -> float:
    """Variance of :func:`smooth_noise` (kernel SD ``sigma`` samples) after an FIR filter.

    Parameters
    ----------
    impulse_response : ndarray, shape (n_taps,)
        The filter, sampled at the process's rate.
    sigma : float
        Kernel SD of the smooth process, in samples.

    Returns
    -------
    float
        ``sum_ij h_i h_j rho(i - j)`` with the process's autocorrelation ``rho``.
    """
    kernel = gaussian_kernel(sigma)
    rho = np.correlate(kernel, kernel, "full") / (kernel**2).sum()  # lags -2r..2r
    hh = np.correlate(impulse_response, impulse_response, "full")  # lags -(n-1)..(n-1)
    radius = (rho.size - 1) // 2
    centre = impulse_response.size - 1
    lags = min(radius, centre)
    return float(
        np.dot(hh[centre - lags : centre + lags + 1], rho[radius - lags : radius + lags + 1])
    )
