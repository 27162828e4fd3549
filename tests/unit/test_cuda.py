"""NeuroBOLT on a CUDA GPU: the CPU's model and recipe, on the GPU (skipped without one).

On a GPU machine: ``python -m pytest -m cuda tests/unit/test_cuda.py``, or
``benchmarks/gpu_check.sh``, which runs these tests and then the speed benchmark. The
module imports only torch, numpy and the model and training code, so it also runs where
the neuroimaging packages are not installed (``PYTHONPATH=.`` from the repository root).

``NEUROBOLT_TEST_DEVICE=cpu`` runs the same checks on the CPU, to check the tests
themselves on a machine without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from bids_neurobolt.model import NeuroBOLT
from bids_neurobolt.model.labram import Attention
from bids_neurobolt.model.weights import ModelMetadata, load_model, save_model
from bids_neurobolt.train.loop import Runtime, TrainConfig, _Data, fit, predict, train_step
from bids_neurobolt.train.splits import Split

from .test_model_neurobolt import PAPER_CHANNELS
from .test_train_loop import CHANNELS, TINY, toy_problem

DEVICE = torch.device(os.environ.get("NEUROBOLT_TEST_DEVICE", "cuda"))
ON_CUDA = DEVICE.type == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: bf16 autocast on CUDA; the CPU stand-in checks the same code paths in float32.
PRECISION = "bf16" if ON_CUDA else "fp32"


@pytest.fixture
def exact_float32() -> Iterator[None]:
    """Float32 products without TensorFloat-32 (which rounds inputs to 10-bit mantissas)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def paper_windows(n: int, seed: int = 0) -> torch.Tensor:
    """EEG-like windows for the paper's model (26 channels, 16 s at 200 Hz), in units of 100 µV."""
    gen = torch.Generator().manual_seed(seed)
    return 0.2 * torch.randn(n, len(PAPER_CHANNELS), 3200, generator=gen)


def test_float32_forward_matches_the_cpu(exact_float32):
    """The paper's model in float32 gives the CPU's output (heads padded to 24 on CUDA)."""
    model = NeuroBOLT(PAPER_CHANNELS, 66, seed=0).eval()
    x = paper_windows(4)
    with torch.inference_mode():
        cpu = model(x)
        gpu = model.to(DEVICE)(x.to(DEVICE)).cpu()
    assert cpu.abs().max() > 0
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3 * float(cpu.abs().max()))


def test_zero_padded_heads_attend_as_unpadded(exact_float32):
    """Padding LaBraM's 20-feature heads for the fused kernels leaves the attention unchanged."""
    torch.manual_seed(0)
    attention = Attention(200, 10).to(DEVICE).eval()
    x = torch.randn(3, 417, 200, device=DEVICE)
    outputs = []
    with torch.inference_mode():
        for pad in (True, False):
            attention.pad_heads = pad
            outputs.append(attention(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_prediction_on_the_device_tracks_float32_on_the_cpu():
    """``predict`` with the device's runtime (bf16 autocast on CUDA) against float32 on the CPU."""
    model = NeuroBOLT(PAPER_CHANNELS, 66, seed=0).eval()
    x = paper_windows(40).numpy()
    cpu = predict(model, x, runtime=Runtime(device="cpu", progress=False))
    runtime = Runtime(device=str(DEVICE), precision=PRECISION, progress=False)
    device = predict(model, x, runtime=runtime)
    assert device.shape == cpu.shape == (40, 66) and device.dtype == np.float32
    assert np.corrcoef(device.ravel(), cpu.ravel())[0, 1] > 0.999
    assert np.abs(device - cpu).max() < 0.02 * np.abs(cpu).max()


def test_training_steps_on_the_device_lower_the_loss():
    x, y = toy_problem(16)
    xt, yt = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0).to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=ON_CUDA)
    dtype = torch.bfloat16 if ON_CUDA else None
    model.eval()
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(xt), yt).item()
    model.train()
    losses = [train_step(model, optimizer, xt, yt, autocast_dtype=dtype) for _ in range(10)]
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(model(xt), yt).item()
    assert all(loss.device.type == DEVICE.type for loss in losses)
    assert after < 0.5 * before


def test_fit_keeps_small_data_resident_and_reports_the_device():
    x, y = toy_problem(40)
    data = _Data(x, y, DEVICE, resident_fraction=0.4)
    assert (data.resident is not None) == ON_CUDA  # the CPU reads host arrays directly
    assert data.x(np.array([3, 1])).device.type == DEVICE.type
    torch.testing.assert_close(data.x(np.array([3, 1])).cpu(), torch.from_numpy(x[[3, 1]]))
    split = Split(np.arange(28), np.arange(30, 35), np.arange(36, 40))
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    runtime = Runtime(device=str(DEVICE), precision=PRECISION, progress=False)
    result = fit(model, x, y, split, TrainConfig.sloppy(epochs=2, batch_size=8), runtime)
    assert (result.device, result.precision) == (DEVICE.type, PRECISION)
    assert np.isfinite(result.history["train_loss"]).all()
    assert result.predictions.shape == (40, 2) and np.isfinite(result.predictions).all()


def test_compiled_model_trains_and_predicts_like_eager(exact_float32):
    """``--compile``: the spectral branch then takes the DFT as a real product (no complex)."""
    x, y = toy_problem(24)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0).eval()
    eager = predict(model, x, runtime=Runtime(device=str(DEVICE), progress=False))
    compiled = predict(model, x, runtime=Runtime(device=str(DEVICE), compile=True, progress=False))
    np.testing.assert_allclose(compiled, eager, rtol=1e-3, atol=1e-3 * np.abs(eager).max())
    split = Split(np.arange(16), np.arange(16, 20), np.arange(20, 24))
    runtime = Runtime(device=str(DEVICE), precision=PRECISION, compile=True, progress=False)
    result = fit(model, x, y, split, TrainConfig.sloppy(epochs=1, batch_size=8), runtime)
    assert np.isfinite(result.history["train_loss"]).all()
    assert np.isfinite(result.predictions).all()


def test_model_trained_on_the_device_loads_and_predicts_on_the_cpu(tmp_path, exact_float32):
    x, y = toy_problem(24)
    split = Split(np.arange(16), np.arange(16, 20), np.arange(20, 24))
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    runtime = Runtime(device=str(DEVICE), progress=False)
    trained = fit(model, x, y, split, TrainConfig.sloppy(epochs=1, batch_size=8), runtime).model
    on_device = predict(trained, x, runtime=runtime)
    meta = ModelMetadata.for_model(trained, ["a", "b"], atlas="test", config_hash="0", seed=0)
    _, json_path = save_model(trained, tmp_path / "model", meta)
    loaded, _ = load_model(json_path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    on_cpu = predict(loaded, x, runtime=Runtime(device="cpu", progress=False))
    np.testing.assert_allclose(on_cpu, on_device, rtol=1e-3, atol=1e-3 * np.abs(on_cpu).max())
