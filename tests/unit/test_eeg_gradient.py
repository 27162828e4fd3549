"""Tests of the gradient artifact removal (bids_neurobolt.eeg.gradient).

Ground truth: a simulated run whose slice onsets are known to a fraction of a sample,
and whose gradient artifact can be recomputed exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bids_neurobolt.eeg import gradient as G
from bids_neurobolt.eeg.quality import compare_to_truth
from bids_neurobolt.errors import DataError
from bids_neurobolt.simulate import load_ground_truth, simulate_dataset

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "eeg-fmri-timing" / "eeg_rest_fmri"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eeg-gradient") / "sim"
    simulate_dataset(
        root, n_subjects=1, duration=30.0, sfreq=5000.0, n_channels=6, seed=11, resolution=6.0
    )
    return load_ground_truth(root, "01")


@pytest.fixture(scope="module")
def gradient_only(run):
    """Clean EEG plus the gradient artifact (float32), and the truth."""
    return (run.clean_eeg + run.gradient_artifact()).astype(np.float32), run.clean_eeg


def _timing(run, **kwargs):
    kwargs.setdefault("repetition_time", 2.0)
    return G.artifact_timing(run.volume_markers, run.sfreq, **kwargs)


def test_timing_from_slice_markers(run):
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    assert timing.kind == "slice" and timing.n_completed == 0
    np.testing.assert_array_equal(timing.onsets, np.sort(run.slice_markers.ravel()))
    assert timing.slices_per_volume == run.slice_markers.shape[1]


def test_missing_slice_markers_are_completed(run):
    markers = run.slice_markers.ravel()
    rng = np.random.default_rng(0)
    dropped = rng.choice(markers.size, markers.size // 10, replace=False)
    timing = _timing(run, slice_samples=np.delete(markers, dropped))
    assert timing.kind == "slice"
    assert timing.n_completed == dropped.size
    assert np.max(np.abs(timing.onsets - np.sort(markers))) <= 2.0


def test_timing_from_slice_timing(run):
    timing = _timing(run, slice_timing=run.slice_timing)
    assert timing.kind == "slice" and "SliceTiming" in timing.source
    # volume marker + SliceTiming: within the marker's rounding and the clock drift
    assert np.max(np.abs(timing.onsets - np.sort(run.slice_onsets.ravel()))) <= 1.5


def test_slice_period_measured_on_the_data(run, gradient_only):
    data, _ = gradient_only
    timing = _timing(run, reference=data[0])
    true_period = np.median(np.diff(run.slice_onsets, axis=1))
    assert timing.kind == "slice"
    assert timing.period == pytest.approx(true_period, abs=0.05)
    assert timing.slices_per_volume == run.slice_markers.shape[1]


def test_volume_epochs_without_slice_information(run):
    timing = _timing(run)
    assert timing.kind == "volume"
    np.testing.assert_array_equal(timing.onsets, run.volume_markers)


def test_irregular_slice_timing_falls_back_to_volumes(run):
    times = np.sort(run.slice_timing)
    times[3] += 0.5 * (times[4] - times[3])  # one slice off the regular grid
    assert _timing(run, slice_timing=times).kind == "volume"


def test_real_analyzer_slice_markers():
    vmrk = REAL / "derivatives" / "sub-32" / "eeg" / "sub-32_task-rest_eeg.vmrk"
    if not vmrk.is_file():
        pytest.skip("real marker files (../shared/data) are not available")
    import mne

    annotations = mne.read_annotations(vmrk, sfreq=250.0)
    samples = np.round(annotations.onset * 5000.0).astype(int)  # as at the 5 kHz recording
    kinds = np.array([d.strip() for d in annotations.description])
    volumes, slices = samples[kinds == "Scanner/Scan Start"], samples[kinds == "Scanner/s"]
    timing = G.artifact_timing(volumes, 5000.0, slice_samples=slices, repetition_time=2.16)
    assert (volumes.size, timing.slices_per_volume, timing.n_completed) == (300, 30, 0)
    assert timing.kind == "slice" and timing.period == pytest.approx(360.0, abs=1.0)


def test_too_few_volumes_is_an_error():
    with pytest.raises(DataError, match="at least two"):
        G.artifact_timing(np.array([100]), 5000.0)


def test_low_sampling_rate_is_an_error(run):
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    with pytest.raises(DataError, match="at least 1000 Hz"):
        G.plan_gradient(timing, np.zeros(run.n_samples), 500.0)


def test_sub_sample_delays(run, gradient_only):
    data, _ = gradient_only
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    plan = G.plan_gradient(timing, data[0], run.sfreq)
    true = (run.slice_onsets - run.slice_markers).ravel()
    error = plan.shifts - (true - true.mean())
    assert np.std(error) < 0.02  # samples
    assert plan.diagnostics["alignment_correlation"] > 0.99


@pytest.mark.parametrize("source", ["markers", "slice_timing"])
def test_gradient_removed_including_edges(run, gradient_only, source):
    data, truth = gradient_only
    kwargs = (
        {"slice_samples": run.slice_markers.ravel()}
        if source == "markers"
        else {"slice_timing": run.slice_timing}
    )
    plan = G.plan_gradient(_timing(run, **kwargs), data[0], run.sfreq)
    x = data.copy()
    G.subtract_gradient(x, plan)
    tr = int(2.0 * run.sfreq)
    first, last = run.volume_markers[0], run.volume_markers[-1]
    corr, _ = compare_to_truth(x[:6], truth[:6], run.sfreq, span=(first, last + tr))
    assert np.median(corr) >= 0.98
    eeg_rms = np.std(truth[:6])
    for start in (first, last):  # the first and the last TR are corrected too
        residual = x[:6, start : start + tr] - truth[:6, start : start + tr]
        assert np.sqrt(np.mean(residual**2)) < 0.2 * eeg_rms
    outside = slice(0, first - 10)
    np.testing.assert_array_equal(x[:, outside], data[:, outside])


def test_alignment_matters(run, gradient_only):
    data, truth = gradient_only
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    residual = {}
    for align in (True, False):
        params = G.GradientParams(align=align, obs_components=0)
        x = data.copy()
        G.subtract_gradient(x, G.plan_gradient(timing, data[0], run.sfreq, params), params)
        residual[align] = np.std(x[:6] - truth[:6])
    assert residual[True] < 0.25 * residual[False]


def test_template_keeps_slow_eeg(run, gradient_only):
    data, truth = gradient_only
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    span = (run.volume_markers[0], run.volume_markers[-1])
    result = {}
    for keep in (True, False):
        params = G.GradientParams(template_highpass=keep)
        x = data.copy()
        G.subtract_gradient(x, G.plan_gradient(timing, data[0], run.sfreq, params), params)
        result[keep] = np.median(compare_to_truth(x[:6], truth[:6], run.sfreq, band=(0.3, 2.0),
                                                  span=span)[0])  # fmt: skip
    assert result[True] >= 0.98
    assert result[True] > result[False]


def test_obs_fits_scanner_locked_residuals_only(run):
    n, sfreq = run.n_samples, run.sfreq
    timing = _timing(run, slice_samples=run.slice_markers.ravel())
    plan = G.plan_gradient(timing, np.zeros(n, np.float32), sfreq, G.GradientParams(align=False))
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((2, n)).astype(np.float32)
    locked = noise.copy()
    samples, epoch, offset = G.core_index(plan)
    wave = np.sin(2 * np.pi * 0.18 * np.arange(plan.core_len.max()))  # ~900 Hz at 5 kHz
    gain = 5.0 * rng.standard_normal(plan.n_epochs)
    locked[0, samples] += (gain[epoch] * wave[offset]).astype(np.float32)
    fitted, n_used = G.fit_obs(locked, plan, "auto", 150, 70.0)
    assert n_used[0] >= 1 and n_used[1] == 0
    before = np.std(locked[0, samples] - noise[0, samples])
    after = np.std(locked[0, samples] - fitted[0, samples] - noise[0, samples])
    assert after < 0.2 * before
    _, n_noise = G.fit_obs(noise, plan, "auto", 150, 70.0)
    assert np.all(n_noise == 0)


@pytest.mark.parametrize(("n_obs", "dim"), [(50, 40), (40, 200), (300, 200)])
def test_top_components_match_svd(n_obs, dim):
    rng = np.random.default_rng(2)
    scales = np.array([10.0, 6.0, 3.0])
    y = (rng.standard_normal((2, n_obs, 3)) * scales) @ rng.standard_normal((2, 3, dim))
    y += 0.01 * rng.standard_normal((2, n_obs, dim))
    components, variance = G.top_components(y, 3, return_variance=True)
    for b in range(2):
        _, s, vt = np.linalg.svd(y[b], full_matrices=False)
        overlap = np.abs(vt[:3] @ components[b])
        np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)
        np.testing.assert_allclose(variance[b], s[:3] ** 2 / n_obs, rtol=1e-3)


def test_artifact_present(run, gradient_only):
    data, truth = gradient_only
    assert G.artifact_present(data[:3], run.volume_markers) > 0.8
    assert G.artifact_present(truth[:3], run.volume_markers) < 0.3


def test_chunk_size_bounds_memory(run, gradient_only):
    data, _ = gradient_only
    plan = G.plan_gradient(_timing(run, slice_samples=run.slice_markers.ravel()), data[0], 5000.0)
    small, large = (G.chunk_size(run.n_samples, plan, b) for b in (1.0, 1e12))
    assert small == 1 and large > 1000
    assert 28.0 * run.n_samples * G.chunk_size(run.n_samples, plan, 2e8) <= 2e8
    assert G.chunk_size(run.n_samples, None, 2e8) >= G.chunk_size(run.n_samples, plan, 2e8)


def test_epoch_blocks_give_the_same_result(run, gradient_only, monkeypatch):
    data, _ = gradient_only
    plan = G.plan_gradient(_timing(run, slice_samples=run.slice_markers.ravel()), data[0], 5000.0)
    whole = data.copy()
    G.subtract_gradient(whole, plan)
    monkeypatch.setattr(G, "epochs_per_block", lambda n_channels, plan: 2 * plan.window)
    blocked = data.copy()
    G.subtract_gradient(blocked, plan)
    assert plan.n_epochs > 4 * plan.window  # several blocks
    np.testing.assert_allclose(blocked, whole, atol=2e-3)


def test_params_are_checked():
    with pytest.raises(ValueError, match="window"):
        G.GradientParams(window=1)
    with pytest.raises(ValueError, match="obs_components"):
        G.GradientParams(obs_components=-1)
