"""Tests of the EEG-to-BOLD couplings and null controls (bids_neurobolt.simulate.couplings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from bids_neurobolt.simulate.bold import ROI_NAMES, canonical_hrf
from bids_neurobolt.simulate.couplings import (
    COUPLINGS,
    EEG_SFREQ,
    SHIFT_SECONDS,
    SPATIAL_BAND,
    CoupledRun,
    CouplingTruth,
    gamma_hrf,
    interaction_drive,
    roi_hrfs,
    scale_like_targets,
    simulate_coupled,
    simulate_coupled_run,
    spatial_angles,
    spatial_contrasts,
)
from bids_neurobolt.simulate.eeg import BAND_RANGES, BANDS

DURATION = 600.0
TR = 2.1
N_CHANNELS = 8
COUPLED = ("linear", "hrf-lag", "nonlinear", "spatial")
CONTROLS = ("control-unrelated", "control-shifted")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_model.py"


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, int], tuple[CoupledRun, CouplingTruth]]:
    """Every coupling at seed 0, the controls also at seeds 1 and 2 (600 s, 8 channels; the
    spatial coupling with the default 26, whose contrasts average out more background)."""
    out = {}
    for coupling in COUPLINGS:
        seeds = (0, 1, 2) if coupling in CONTROLS else (0,)
        for seed in seeds:
            out[coupling, seed] = simulate_coupled(
                coupling, duration=DURATION, tr=TR, seed=seed, n_channels=_channels(coupling)
            )
    return out


def _channels(coupling: str) -> int:
    return 26 if coupling == "spatial" else N_CHANNELS


def _r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column pair."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))


def _log_power(x: np.ndarray, band: tuple[float, float], truth: CouplingTruth) -> np.ndarray:
    """Log band power of each row of 200 Hz ``x`` in 0.1 s bins on the latent grid."""
    sos = butter(4, band, btype="band", fs=EEG_SFREQ, output="sos")
    power = sosfiltfilt(sos, np.atleast_2d(x).astype(np.float64), axis=-1) ** 2
    step = round(0.1 * EEG_SFREQ)
    n_bins = power.shape[-1] // step
    log_power = np.log(power[:, : n_bins * step].reshape(len(power), n_bins, step).mean(-1))
    start = round(-truth.latent_times[0] * 10.0)  # latent sample of the first EEG sample
    out = np.repeat(log_power.mean(-1, keepdims=True), truth.latent_times.size, axis=1)
    n = min(n_bins, truth.latent_times.size - start)
    out[:, start : start + n] = log_power[:, :n]
    return out


def _regressors(series: np.ndarray, truth: CouplingTruth, shift: float = 0.0) -> np.ndarray:
    """Canonical-HRF-convolved rows of ``series`` (latent grid), ``shift`` s later, at the
    volumes, low-passed and scaled like the targets: ``(n_volumes, n_rows)``."""
    hrf = canonical_hrf(float(truth.latent_times[1] - truth.latent_times[0]))
    rows = np.atleast_2d(series)
    n = rows.shape[1]
    sampled = np.column_stack(
        [
            np.interp(truth.volume_times - shift, truth.latent_times, np.convolve(row, hrf)[:n])
            for row in rows
        ]
    )
    return scale_like_targets(sampled, TR)[0]


def _r2(y: np.ndarray, x: np.ndarray) -> float:
    """Share of ``y``'s variance explained by least squares on ``x`` and a constant."""
    design = np.column_stack([np.ones(len(y)), x])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(1.0 - residual.var() / y.var())


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_shapes_dtypes_and_finite(runs, coupling):
    run, truth = runs[coupling, 0]
    n_volumes = round(DURATION / TR)
    assert run.coupling == coupling
    assert run.tr == TR
    assert run.roi_names == ROI_NAMES
    assert len(run.ch_names) == _channels(coupling) == run.eeg.shape[0]
    assert run.eeg.dtype == np.float32 and run.targets.dtype == np.float32
    assert run.markers.dtype == np.int64 and run.drive.dtype == np.float64
    assert run.markers.shape == (n_volumes,)
    assert run.targets.shape == run.drive.shape == (n_volumes, len(ROI_NAMES))
    for array in (run.eeg, run.targets, run.drive):
        assert np.isfinite(array).all()
    # one marker per TR, all inside the EEG
    assert np.allclose(np.diff(run.markers), TR * EEG_SFREQ, atol=1)
    assert run.markers[0] > 0 and run.markers[-1] < run.eeg.shape[1]
    # physiological amplitudes (µV) and targets scaled like the app's
    assert 5.0 < np.std(run.eeg) < 100.0
    assert np.allclose(run.targets.mean(0), 0.0, atol=1e-5)
    assert np.allclose(np.percentile(np.abs(run.targets), 95, axis=0), 1.0, atol=1e-4)
    assert truth.neural_drive.shape == (truth.latent_times.size, len(ROI_NAMES))
    assert np.allclose(truth.kernels.sum(1), 1.0)


def test_deterministic_given_seed_and_subject():
    first = simulate_coupled_run("spatial", seed=5, n_channels=N_CHANNELS, duration=DURATION)
    again = simulate_coupled_run("spatial", seed=5, n_channels=N_CHANNELS, duration=DURATION)
    other_seed = simulate_coupled_run("spatial", seed=6, n_channels=N_CHANNELS, duration=DURATION)
    other_subject = simulate_coupled_run(
        "spatial", seed=5, subject=2, n_channels=N_CHANNELS, duration=DURATION
    )
    for name in ("eeg", "markers", "targets", "drive"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    for other in (other_seed, other_subject):
        assert not np.allclose(first.eeg, other.eeg)
        assert not np.allclose(first.targets, other.targets)


def test_subjects_share_the_couplings():
    """Subjects of one seed: the same lags and angles, close weights and topographies."""
    one = simulate_coupled("spatial", seed=3, subject=1, n_channels=N_CHANNELS)[1]
    two = simulate_coupled("spatial", seed=3, subject=2, n_channels=N_CHANNELS)[1]
    assert np.abs(one.roi_weights - two.roi_weights).max() < 0.6
    assert np.corrcoef(one.roi_weights.ravel(), two.roi_weights.ravel())[0, 1] > 0.8
    np.testing.assert_array_equal(np.sign(one.topographies), np.sign(two.topographies))
    for a, b in zip(one.topographies, two.topographies, strict=True):
        assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.99  # same shape up to gain and jitter
    assert not np.allclose(one.latents, two.latents)
    assert roi_hrfs() == roi_hrfs()
    np.testing.assert_array_equal(spatial_angles(), spatial_angles())


@pytest.mark.parametrize("coupling", COUPLED)
def test_drive_explains_the_targets(runs, coupling):
    run, _ = runs[coupling, 0]
    assert _r(run.drive, run.targets).mean() > 0.6


@pytest.mark.parametrize("coupling", CONTROLS)
def test_controls_drive_does_not_explain_the_targets(runs, coupling):
    r = [_r(runs[coupling, seed][0].drive, runs[coupling, seed][0].targets) for seed in (0, 1, 2)]
    assert abs(np.mean(r)) < 0.2


def test_controls_keep_this_eeg_and_its_linear_drive(runs):
    linear, _ = runs["linear", 0]
    for coupling in CONTROLS:
        control, _ = runs[coupling, 0]
        np.testing.assert_array_equal(control.eeg, linear.eeg)
        np.testing.assert_array_equal(control.drive, linear.drive)
        assert np.abs(_r(control.targets, linear.targets)).mean() < 0.5


def test_shifted_control_is_the_circular_shift(runs):
    linear, _ = runs["linear", 0]
    shifted, _ = runs["control-shifted", 0]
    shift = round(SHIFT_SECONDS / TR)
    np.testing.assert_array_equal(shifted.targets, np.roll(linear.targets, shift, axis=0))
    np.testing.assert_array_equal(shifted.targets[shift:], linear.targets[:-shift])


def test_shifted_control_needs_ten_minutes():
    with pytest.raises(ValueError, match="at least 600 s"):
        simulate_coupled_run("control-shifted", duration=599.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coupling": "quadratic"}, "must be one of"),
        ({"coupling": "linear", "noise": -0.1}, "'noise'"),
        ({"coupling": "linear", "subject": 0}, "'subject'"),
        ({"coupling": "spatial", "n_channels": 6}, "at least 7 channels"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_coupled_run(**kwargs)


def test_gamma_hrf_defaults_are_the_canonical_hrf():
    np.testing.assert_allclose(gamma_hrf(0.1), canonical_hrf(0.1), atol=1e-12)
    delayed = gamma_hrf(0.1, lag=3.0, length=35.0)
    assert np.argmax(delayed) - np.argmax(canonical_hrf(0.1)) == 30


def test_roi_hrfs_are_in_range():
    hrfs = roi_hrfs()
    assert len(hrfs) == len(ROI_NAMES)
    for hrf in hrfs:
        assert 4.0 <= hrf.peak <= 8.0 and 0.0 <= hrf.lag <= 10.0
        assert 8.0 <= hrf.undershoot - hrf.peak <= 12.0
        kernel = hrf.kernel(0.1)
        peak = np.argmax(kernel) * 0.1
        assert abs(peak - hrf.lag - hrf.peak) < 0.15
    assert len({round(h.lag, 3) for h in hrfs}) == len(hrfs)
    assert sum(h.lag > 4.0 for h in hrfs) >= 2  # the lag test below needs such ROIs


def test_lag_coupling_peaks_late(runs):
    """Regressing the targets on canonical-HRF-convolved EEG band power (4 bands, channel
    mean) fits best with a delay of more than 2 s for every ROI lagged by more than 4 s."""
    run, truth = runs["hrf-lag", 0]
    power = np.vstack([_log_power(run.eeg, BAND_RANGES[b], truth).mean(0) for b in BANDS])
    shifts = np.arange(-4.0, 16.01, 0.5)
    fits = np.array(
        [
            [_r2(run.targets[:, r], x) for r in range(len(ROI_NAMES))]
            for x in (_regressors(power, truth, shift) for shift in shifts)
        ]
    )
    best = shifts[fits.argmax(0)]
    lags = np.array([h.lag for h in roi_hrfs()])
    assert (best[lags > 4.0] > 2.0).all(), best
    # the same analysis of the linear coupling's (noise-free) drive finds no delay
    linear, linear_truth = runs["linear", 0]
    fits = [
        np.mean([_r2(linear.drive[:, r], x) for r in range(len(ROI_NAMES))])
        for x in (_regressors(linear_truth.latents.T, linear_truth, s) for s in shifts)
    ]
    assert abs(shifts[int(np.argmax(fits))]) <= 1.0


def test_spatial_coupling_needs_a_spatial_contrast(runs):
    """No channel's band power follows the drive; the sources' contrasts do."""
    run, truth = runs["spatial", 0]
    single = _regressors(_log_power(run.eeg, SPATIAL_BAND, truth), truth)  # (vol, channel)
    best_single = [
        np.abs(_r(single, np.broadcast_to(run.drive[:, [r]], single.shape))).max()
        for r in range(len(ROI_NAMES))
    ]
    contrasts = spatial_contrasts(truth.topographies)[1:] @ run.eeg
    sources = _regressors(_log_power(contrasts, SPATIAL_BAND, truth), truth)
    angles = spatial_angles()
    recovered = _r(sources @ np.vstack([np.cos(angles), np.sin(angles)]), run.drive)
    assert max(best_single) < 0.3, best_single
    assert recovered.min() > 0.8, recovered


def test_nonlinear_coupling_is_half_linear(runs):
    """A linear model of HRF-convolved log band power explains about half of the drive; the
    true form (HRF-convolved w·z and the interaction) explains all of it."""
    run, truth = runs["nonlinear", 0]
    bands = _regressors(truth.latents.T, truth)
    linear_share = [_r2(run.drive[:, r], bands) for r in range(len(ROI_NAMES))]
    drive = interaction_drive(truth.latents, truth.roi_weights)
    np.testing.assert_allclose(drive, truth.neural_drive)
    true_form = [
        _r2(run.drive[:, r], _regressors(np.vstack([truth.latents @ w, drive[:, r]]), truth))
        for r, w in enumerate(truth.roi_weights)
    ]
    assert np.mean(linear_share) < 0.6, linear_share
    assert min(true_form) > 0.95, true_form
    # the linear coupling is entirely linear
    linear, linear_truth = runs["linear", 0]
    bands = _regressors(linear_truth.latents.T, linear_truth)
    assert min(_r2(linear.drive[:, r], bands) for r in range(len(ROI_NAMES))) > 0.95


def test_bench_model_uses_the_couplings():
    spec = importlib.util.spec_from_file_location("bench_model", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_model"] = bench
    try:
        spec.loader.exec_module(bench)
        assert set(bench.COUPLING_CHOICES) == set(COUPLINGS) | set(bench.COUPLING_ALIASES)
        (eeg, markers, targets, ch_names, roi_names), *_ = bench.simulated_runs(
            1, 120.0, TR, 4, 0.3, coupling="interaction"
        )
    finally:
        del sys.modules["bench_model"]
    run = simulate_coupled_run(
        "nonlinear", duration=120.0, tr=TR, seed=4, n_channels=len(bench.CHANNELS)
    )
    np.testing.assert_array_equal(targets, run.targets)
    np.testing.assert_array_equal(eeg, run.eeg)
    np.testing.assert_array_equal(markers, run.markers)
    assert ch_names == run.ch_names and roi_names == run.roi_names
