"""Fused linear layers: same values as the eager operations, autograd kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bids_neurobolt.model.fused import fused_available, linear, linear_gelu, project


def test_fused_linear_gelu_equals_eager_in_float32():
    torch.manual_seed(0)
    linear = torch.nn.Linear(20, 48)
    x = torch.randn(3, 11, 20)
    with torch.inference_mode():
        expected = F.gelu(linear(x))
        ours = linear_gelu(linear, x)
        strided = linear_gelu(linear, torch.randn(3, 11, 40)[..., ::2])
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)
    assert strided.shape == (3, 11, 48)


def test_fused_linear_gelu_bfloat16_within_one_rounding_step():
    torch.manual_seed(0)
    linear = torch.nn.Linear(20, 48).to(torch.bfloat16)
    x = torch.randn(4, 20).to(torch.bfloat16)
    with torch.inference_mode():
        expected = F.gelu(linear(x).float())
        ours = linear_gelu(linear, x)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), expected, atol=2e-2, rtol=1e-2)


def test_with_gradients_the_autograd_path_is_taken():
    linear = torch.nn.Linear(5, 7)
    x = torch.randn(2, 5, requires_grad=True)
    assert not fused_available(x)
    linear_gelu(linear, x).sum().backward()
    assert x.grad is not None and linear.weight.grad is not None
    with torch.no_grad():
        assert fused_available(x) == (
            torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_linear_with_bias_equals_the_layer(dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 16).to(dtype)
    x = torch.randn(5, 7, 24).to(dtype)
    with torch.inference_mode():
        ours, expected = linear(layer, x), layer(x)
    assert ours.dtype == dtype and ours.shape == (5, 7, 16)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)
    x.requires_grad_(True)
    linear(layer, x).sum().backward()  # with gradients: the layer itself
    assert x.grad is not None


@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_adds_the_residual_inside_the_product(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 16, bias=bias)
    x, residual = torch.randn(5, 7, 24), 3.0 * torch.randn(5, 7, 16)
    with torch.inference_mode():
        expected = residual + layer(x)  # float32: the ordinary path, exactly
        torch.testing.assert_close(linear(layer, x, residual), expected, atol=0, rtol=0)
        ours = linear(layer.bfloat16(), x.bfloat16(), residual.bfloat16()).float()
    # bfloat16: rounded once, against the float32 sum within two bf16 steps of its size
    assert float((ours - expected).abs().max()) < 2 * 2**-8 * float(expected.abs().max())
    assert float((ours - expected).abs().max()) > 0  # it did run in bfloat16


def test_project_adds_the_residual_after_the_dropout():
    torch.manual_seed(0)
    layer, dropout = torch.nn.Linear(24, 16), torch.nn.Dropout(0.5)
    x, residual = torch.randn(5, 7, 24), torch.randn(5, 7, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        ours = project(layer, x, residual, dropout)
        torch.manual_seed(1)
        expected = residual + dropout(layer(x))
        torch.testing.assert_close(ours, expected, atol=0, rtol=0)
        assert float((ours - (residual + layer(x))).abs().max()) > 0  # the dropout acted
        dropout.eval()  # off: the residual goes inside the product
        torch.testing.assert_close(project(layer, x, residual, dropout), linear(layer, x, residual))
        torch.testing.assert_close(project(layer, x), layer(x), atol=0, rtol=0)


class _BrokenOperator:
    """Stands in for oneDNN's fused operator on a build where it fails or is wrong."""

    def __init__(self, error: bool) -> None:
        self.error = error

    def __call__(self, x, weight, bias, *args):
        if self.error:
            raise RuntimeError("could not create a primitive descriptor")
        return torch.zeros(*x.shape[:-1], weight.shape[0], dtype=x.dtype)

    def binary(self, x, residual, weight, bias, *args):
        return self(x, weight, bias)


@pytest.mark.parametrize("error", [True, False], ids=["raises", "wrong"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_operator_that_fails_or_disagrees_is_not_used(monkeypatch, error, dtype):
    from bids_neurobolt.model import fused

    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 48).to(dtype)
    x, residual = torch.randn(3, 20).to(dtype), torch.randn(3, 48).to(dtype)
    monkeypatch.setattr(fused, "_LINEAR_POINTWISE", _BrokenOperator(error))
    fused._fused_works.cache_clear()
    try:
        with torch.inference_mode():
            assert not fused.fused_available(x)
            torch.testing.assert_close(linear_gelu(layer, x), F.gelu(layer(x)))
            torch.testing.assert_close(linear(layer, x, residual), residual + layer(x))
    finally:
        fused._fused_works.cache_clear()  # the real operator's verdict, for later tests
