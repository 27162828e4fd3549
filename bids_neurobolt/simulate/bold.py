"""BOLD: MNI grid and anatomy, the planted ROI atlas, HRF-convolved ROI signals, volumes.

The BOLD run lives on a coarse grid aligned with the MNI152NLin2009cAsym template
bounding box (TemplateFlow's 2 mm grid starts at (-96, -132, -78) mm and is 97 x 115 x
97; a grid at ``r`` mm covers the same box). Baseline intensities come from the MNI152
template bundled with nilearn (ICBM 2009a symmetric, close enough for a baseline),
resampled to the grid.

Six bilateral ellipsoids stand for the ROIs of the NeuroBOLT paper. Each ROI's signal
is an HRF-convolved weighted sum of the EEG band-power latents (different weights per
ROI), mixed with an ROI-specific smooth component the EEG does not explain; a global
signal driven mostly by (low) vigilance is added to every brain voxel, and Gaussian
noise to every head voxel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import binary_fill_holes, map_coordinates
from scipy.special import gammaln

from bids_neurobolt.simulate.eeg import latent_covariance, smooth_latents
from bids_neurobolt.simulate.noise import filtered_variance

#: Template space of the BOLD runs and the atlas.
SPACE = "MNI152NLin2009cAsym"

# TemplateFlow MNI152NLin2009cAsym res-2 bounding box: first voxel centre and extent (mm).
_GRID_ORIGIN = np.array([-96.0, -132.0, -78.0])
_GRID_EXTENT = np.array([192.0, 228.0, 192.0])


@dataclass(frozen=True)
class RoiSpec:
    """An ROI planted as a pair of mirrored ellipsoids.

    Attributes
    ----------
    name : str
        ROI name (as in the DiFuMo-64 labels used by the NeuroBOLT paper).
    centre : tuple of float
        Right-hemisphere centre (x > 0), MNI mm; mirrored to x < 0.
    radii : tuple of float
        Ellipsoid semi-axes (mm).
    weights : tuple of float
        Coupling to the delta, theta, alpha and beta log-power latents.
    """

    name: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    weights: tuple[float, float, float, float]


#: The ROIs, with illustrative (not fitted) couplings to the band-power latents
#: (delta, theta, alpha, beta). Occipital alpha is negatively coupled to the visual
#: cortex and positively to the thalamus (Goldman et al. 2002); beta is positively
#: coupled to the default-mode precuneus (Laufs et al. 2003).
ROIS: tuple[RoiSpec, ...] = (
    RoiSpec("Cuneus", (9.0, -80.0, 24.0), (6.0, 9.0, 9.0), (0.0, 0.2, -0.9, 0.2)),
    RoiSpec("Heschl’s gyrus", (45.0, -20.0, 8.0), (9.0, 6.0, 6.0), (-0.2, 0.3, -0.4, 0.6)),
    RoiSpec(
        "Middle frontal gyrus anterior", (35.0, 42.0, 26.0), (8.0, 9.0, 8.0), (-0.3, 0.7, -0.3, 0.3)
    ),
    RoiSpec("Precuneus anterior", (9.0, -55.0, 48.0), (6.0, 9.0, 8.0), (-0.2, -0.4, 0.3, 0.6)),
    RoiSpec("Putamen", (25.0, 3.0, 1.0), (6.0, 11.0, 7.0), (-0.5, 0.2, 0.0, 0.6)),
    RoiSpec("Thalamus", (11.0, -18.0, 7.0), (6.0, 9.0, 7.0), (0.3, 0.0, 0.8, -0.3)),
)

#: ROI names in label order (label ``i + 1`` is ``ROI_NAMES[i]``).
ROI_NAMES: tuple[str, ...] = tuple(roi.name for roi in ROIS)


def mni_grid(resolution: float) -> tuple[NDArray[np.float64], tuple[int, int, int]]:
    """Affine and shape of an isotropic grid covering the MNI152NLin2009cAsym box.

    Parameters
    ----------
    resolution : float
        Voxel size in mm.

    Returns
    -------
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI (RAS mm) affine; voxel (0, 0, 0) is at (-96, -132, -78).
    shape : tuple of int
        Grid shape (49, 58, 49 at 4 mm; 97, 115, 97 at 2 mm).
    """
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = _GRID_ORIGIN
    shape = tuple(int(n) for n in np.floor(_GRID_EXTENT / resolution + 1e-6) + 1)
    return affine, shape  # type: ignore[return-value]


def voxel_coordinates(affine: NDArray[np.float64], shape: tuple[int, ...]) -> NDArray[np.float64]:
    """World (mm) coordinates of every voxel centre, shape ``(3, *shape)``."""
    ijk = np.indices(shape, dtype=float)
    return np.tensordot(affine[:3, :3], ijk, axes=1) + affine[:3, 3].reshape(3, 1, 1, 1)


@dataclass(frozen=True)
class Anatomy:
    """Template anatomy on the simulation grid.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine.
    baseline : ndarray, shape (nx, ny, nz), float32
        Mean EPI intensity (zero outside the head).
    brain : ndarray of bool
        Brain mask.
    head : ndarray of bool
        Head mask (brain included).
    """

    affine: NDArray[np.float64]
    baseline: NDArray[np.float32]
    brain: NDArray[np.bool_]
    head: NDArray[np.bool_]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        return self.baseline.shape  # type: ignore[return-value]


def _resample(image, affine: NDArray[np.float64], shape: tuple[int, ...]) -> NDArray[np.float64]:
    source = np.asarray(image.get_fdata(), dtype=float)
    world = voxel_coordinates(affine, shape).reshape(3, -1)
    to_source = np.linalg.inv(image.affine)
    coords = to_source[:3, :3] @ world + to_source[:3, 3:4]
    return map_coordinates(source, coords, order=1, cval=0.0).reshape(shape)


@functools.lru_cache(maxsize=4)
def load_anatomy(resolution: float) -> Anatomy:
    """Resample nilearn's bundled MNI152 template and brain mask to the simulation grid.

    Parameters
    ----------
    resolution : float
        Voxel size in mm.

    Returns
    -------
    Anatomy
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    source_resolution = 1 if resolution < 2 else 2
    affine, shape = mni_grid(resolution)
    template = _resample(load_mni152_template(resolution=source_resolution), affine, shape)
    brain = _resample(load_mni152_brain_mask(resolution=source_resolution), affine, shape) > 0.5
    head = binary_fill_holes((template > 0.05) | brain)
    baseline = np.where(head, 300.0 + 700.0 * np.clip(template, 0.0, 1.0), 0.0)
    return Anatomy(
        affine=affine, baseline=baseline.astype(np.float32), brain=brain, head=np.asarray(head)
    )


def roi_atlas(anatomy: Anatomy) -> NDArray[np.int16]:
    """Label image of the bilateral ROI ellipsoids (label ``i + 1`` for ``ROIS[i]``).

    Parameters
    ----------
    anatomy : Anatomy
        Grid and brain mask; labels are restricted to the brain.

    Returns
    -------
    ndarray of int16, same shape as the grid
    """
    xyz = voxel_coordinates(anatomy.affine, anatomy.shape)
    labels = np.zeros(anatomy.shape, dtype=np.int16)
    for index, roi in enumerate(ROIS, start=1):
        radii = np.array(roi.radii).reshape(3, 1, 1, 1)
        for side in (1.0, -1.0):
            centre = np.array([side * roi.centre[0], roi.centre[1], roi.centre[2]])
            inside = (((xyz - centre.reshape(3, 1, 1, 1)) / radii) ** 2).sum(axis=0) <= 1.0
            labels[inside & anatomy.brain & (labels == 0)] = index
    return labels


def canonical_hrf(dt: float, length: float = 32.0) -> NDArray[np.float64]:
    """Sample the canonical double-gamma haemodynamic response function (unit sum).

    ``h(t) = g(t; 6) - g(t; 16) / 6`` with ``g(t; a)`` the gamma density of shape ``a`` and
    unit scale (peak near 5 s, undershoot near 15 s), sampled every ``dt`` seconds and
    normalised to sum to one (unit gain for slow signals).

    Parameters
    ----------
    dt : float
        Sampling interval in seconds.
    length : float
        Kernel length in seconds.

    Returns
    -------
    ndarray, shape (round(length / dt),)

    References
    ----------
    .. [1] Friston KJ, Fletcher P, Josephs O, Holmes A, Rugg MD, Turner R (1998).
           Event-related fMRI: characterizing differential responses. NeuroImage 7:30-40.
    .. [2] Glover GH (1999). Deconvolution of impulse response in event-related BOLD
           fMRI. NeuroImage 9:416-429.
    """
    t = np.arange(round(length / dt)) * dt
    with np.errstate(divide="ignore"):
        log_t = np.log(t)

    def gamma_pdf(shape: float) -> NDArray[np.float64]:
        return np.where(t > 0, np.exp((shape - 1) * log_t - t - gammaln(shape)), 0.0)

    h = gamma_pdf(6.0) - gamma_pdf(16.0) / 6.0
    return h / h.sum()


def roi_weights(rng: np.random.Generator) -> NDArray[np.float64]:
    """Draw a subject's ROI-by-band couplings: the :data:`ROIS` weights plus N(0, 0.1).

    Returns
    -------
    ndarray, shape (n_rois, n_bands)
    """
    base = np.array([roi.weights for roi in ROIS])
    return base + 0.1 * rng.standard_normal(base.shape)


@dataclass(frozen=True)
class RoiSignals:
    """Noise-free BOLD signals (percent signal change) at the sample times.

    Attributes
    ----------
    times : ndarray, shape (n_volumes,)
        Sample times (s from the first EEG sample).
    eeg : ndarray, shape (n_volumes, n_rois)
        Part of each ROI signal driven by the EEG band-power latents.
    total : ndarray, shape (n_volumes, n_rois)
        ROI signal: the EEG-driven part plus the ROI's own smooth component.
    global_signal : ndarray, shape (n_volumes,)
        Signal added to every brain voxel (ROIs included).
    """

    times: NDArray[np.float64]
    eeg: NDArray[np.float64]
    total: NDArray[np.float64]
    global_signal: NDArray[np.float64]


def _convolve(drive: NDArray[np.float64], hrf: NDArray[np.float64]) -> NDArray[np.float64]:
    n = drive.shape[0]
    return np.column_stack([np.convolve(column, hrf)[:n] for column in drive.T])


def roi_signals(
    rng: np.random.Generator,
    *,
    latents: NDArray[np.float64],
    vigilance: NDArray[np.float64],
    latent_times: NDArray[np.float64],
    times: NDArray[np.float64],
    weights: NDArray[np.float64],
    eeg_fraction: float,
    roi_amplitude: float,
    global_amplitude: float,
    timescale: float,
) -> RoiSignals:
    """ROI and global BOLD signals from the band-power latents.

    The neural drive of ROI ``r`` is ``sqrt(f) w_r·z / sd(w_r·z) + sqrt(1 - f) u_r`` with the
    band latents ``z``, the ROI's weights ``w_r`` and an independent smooth course
    ``u_r``; it is convolved with the canonical HRF, scaled so that its expected SD is
    ``roi_amplitude`` percent, and sampled at ``times``. The global drive is
    ``-sqrt(0.6) v + sqrt(0.4) u`` with the vigilance latent ``v`` (global signal rises with
    drowsiness). The scale factors are analytic, not fitted to the run, so a latent value
    maps to the same BOLD change in every run; signals have zero mean in expectation.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    latents : ndarray, shape (n_t, n_bands)
        Band log-power latents.
    vigilance : ndarray, shape (n_t,)
        Vigilance latent.
    latent_times : ndarray, shape (n_t,)
        Regular latent times (s), starting at least 32 s before ``times[0]``.
    times : ndarray, shape (n_volumes,)
        Times at which to sample the BOLD signals (volume marker times).
    weights : ndarray, shape (n_rois, n_bands)
        ROI-by-band couplings.
    eeg_fraction : float
        Share ``f`` of each ROI's variance driven by the EEG latents, in [0, 1].
    roi_amplitude, global_amplitude : float
        SD (percent signal change) of the ROI and global signals.
    timescale : float
        Smoothness (s) of the non-EEG components.

    Returns
    -------
    RoiSignals
    """
    dt = float(latent_times[1] - latent_times[0])
    sfreq = 1.0 / dt
    hrf = canonical_hrf(dt)
    # Every drive below has unit variance and the latents' smoothness in expectation, so
    # one analytic factor gives the HRF-convolved signals their SD (the same in every run).
    scale = 1.0 / np.sqrt(filtered_variance(hrf, timescale * sfreq))

    drive_sd = np.sqrt(np.einsum("rb,bc,rc->r", weights, latent_covariance(), weights))
    eeg_drive = latents @ weights.T / drive_sd
    own = smooth_latents(rng, latents.shape[0], weights.shape[0], sfreq, timescale)
    eeg_bold = _convolve(np.sqrt(eeg_fraction) * eeg_drive, hrf)
    total_bold = eeg_bold + _convolve(np.sqrt(1.0 - eeg_fraction) * own, hrf)

    global_drive = (
        -np.sqrt(0.6) * vigilance
        + np.sqrt(0.4) * smooth_latents(rng, latents.shape[0], 1, sfreq, timescale)[:, 0]
    )
    global_bold = _convolve(global_drive[:, None], hrf)[:, 0]

    def sample(x: NDArray[np.float64], amplitude: float) -> NDArray[np.float64]:
        x = amplitude * scale * x
        if x.ndim == 1:
            return np.interp(times, latent_times, x)
        return np.column_stack([np.interp(times, latent_times, col) for col in x.T])

    return RoiSignals(
        times=np.asarray(times, dtype=float),
        eeg=sample(eeg_bold, roi_amplitude),
        total=sample(total_bold, roi_amplitude),
        global_signal=sample(global_bold, global_amplitude),
    )


def bold_volumes(
    rng: np.random.Generator,
    anatomy: Anatomy,
    labels: NDArray[np.int16],
    signals: RoiSignals,
    noise: float,
) -> NDArray[np.float32]:
    """Synthesise a 4-D BOLD run.

    ``voxel(t) = baseline * (1 + (roi(t) + global(t)) / 100) + baseline * noise / 100 * e``
    with ``e ~ N(0, 1)`` independent per voxel and volume; ``roi`` is zero outside the
    ROIs, ``global`` zero outside the brain, and voxels outside the head are zero.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    anatomy : Anatomy
        Grid, baseline and masks.
    labels : ndarray of int16
        ROI labels from :func:`roi_atlas`.
    signals : RoiSignals
        Noise-free signals (percent).
    noise : float
        Noise SD in percent of the baseline (1 % is a temporal SNR of 100).

    Returns
    -------
    ndarray, shape (nx, ny, nz, n_volumes), float32
    """
    n_volumes = signals.times.size
    head = np.flatnonzero(anatomy.head.ravel())
    baseline = anatomy.baseline.ravel()[head].astype(np.float32)
    percent = np.zeros((head.size, n_volumes), dtype=np.float32)
    percent[anatomy.brain.ravel()[head]] += signals.global_signal.astype(np.float32)
    roi_of_voxel = labels.ravel()[head]
    for index in range(signals.total.shape[1]):
        percent[roi_of_voxel == index + 1] += signals.total[:, index].astype(np.float32)
    percent += np.float32(noise) * rng.standard_normal(percent.shape, dtype=np.float32)
    volumes = np.zeros((*anatomy.shape, n_volumes), dtype=np.float32)
    volumes.reshape(-1, n_volumes)[head] = baseline[:, None] * (1 + percent / 100)
    return volumes
