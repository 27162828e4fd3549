"""Fused CPU kernels for inference.

PyTorch's eager mode runs a linear layer and the GELU that follows it as two passes
over the hidden activations. On the CPU, oneDNN can apply the GELU inside the matrix
product (the same fusion ``torch.compile`` makes), which saves one read and one write
of the largest tensor of each feed-forward network: about 8% of NeuroBOLT's
prediction time on two cores (``benchmarks/bench_model.py speed``). In bfloat16, a
linear layer with a bias (``addmm``) costs 1.2-1.5 times the bare matrix product;
oneDNN adds the bias inside the product at no extra cost, with identical results, and
can add a transformer's residual stream there too, which saves a separate addition over
the stream (about 1 ms of 2-4 ms per layer and 16 windows).

The fused operator has no autograd formula, so it is only used when gradients are off
(prediction, validation); training takes the ordinary path. It is a private PyTorch
operator: when a build lacks it, or when it fails or disagrees with the ordinary layers
on a small probe (run once per dtype, say on a processor that oneDNN serves by other
kernels), the ordinary path is used.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

_LINEAR_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def fused_available(x: torch.Tensor) -> bool:
    """Whether :func:`linear_gelu` takes the fused oneDNN path for ``x``."""
    return (
        _LINEAR_POINTWISE is not None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
        and _fused_works(x.dtype)
    )


@functools.cache
def _fused_works(dtype: torch.dtype) -> bool:
    """Whether the fused operator runs here and agrees with the ordinary layers in ``dtype``.

    Probed once per dtype on a small input (with gradients off), so that a build or a
    processor where the private operator fails, or computes something else, takes the
    ordinary path instead of failing the prediction.
    """
    gen = torch.Generator().manual_seed(0)
    shapes = ((4, 16), (8, 16), (8,), (4, 8))
    x, weight, bias, residual = (torch.randn(s, generator=gen).to(dtype) for s in shapes)
    try:
        with torch.no_grad():
            gelu = _LINEAR_POINTWISE(x, weight, bias, "gelu", [], "none")
            added = _LINEAR_POINTWISE.binary(x, residual, weight, bias, "add")
    except (RuntimeError, NotImplementedError):
        return False
    product = F.linear(x.float(), weight.float(), bias.float())
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return torch.allclose(gelu.float(), F.gelu(product), rtol=tol, atol=tol) and torch.allclose(
        added.float(), product + residual.float(), rtol=tol, atol=tol
    )


def linear_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Return ``gelu(linear(x))`` (exact, erf-based GELU), fused on the CPU without gradients.

    Parameters
    ----------
    linear : torch.nn.Linear
        The layer; its weight has the dtype of ``x``.
    x : torch.Tensor, shape (..., in_features)
        Input.

    Returns
    -------
    torch.Tensor, shape (..., out_features)
        In float32 identical to the unfused result; in bfloat16 within one rounding step.
    """
    if fused_available(x) and linear.weight.dtype == x.dtype:
        return _LINEAR_POINTWISE(x, linear.weight, linear.bias, "gelu", [], "none")
    return F.gelu(linear(x))


def linear(layer: nn.Linear, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``layer(x) + residual``, bias and residual added inside the bf16 product.

    The fused path is taken on the CPU for bfloat16 inputs without gradients.

    Parameters
    ----------
    layer : torch.nn.Linear
        The layer.
    x : torch.Tensor, shape (..., in_features)
        Input.
    residual : torch.Tensor, shape (..., out_features), optional
        Added to the output: a transformer's residual stream. Inside the product this
        saves a pass over the stream and rounds once instead of twice.

    Returns
    -------
    torch.Tensor, shape (..., out_features)
        ``layer(x) + residual``; only bfloat16 inputs without gradients take the fused
        path (in float32 the two differ in the last bits, and are equally fast).
    """
    if x.dtype == torch.bfloat16 and layer.weight.dtype == x.dtype and fused_available(x):
        if residual is not None and residual.dtype == x.dtype and residual.is_contiguous():
            return _LINEAR_POINTWISE.binary(x, residual, layer.weight, layer.bias, "add")
        if layer.bias is not None and residual is None:
            return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "none", [], "none")
    out = layer(x)
    return out if residual is None else residual + out


def project(
    layer: nn.Linear,
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    dropout: nn.Dropout | None = None,
) -> torch.Tensor:
    """Return ``residual + dropout(layer(x))``: a transformer branch's last layer.

    When the dropout is off (evaluation, or ``p == 0``), the residual is added inside
    the product by :func:`linear`.

    Parameters
    ----------
    layer : torch.nn.Linear
        The branch's output layer.
    x : torch.Tensor, shape (..., in_features)
        Input.
    residual : torch.Tensor, shape (..., out_features), optional
        The residual stream; None returns the branch alone.
    dropout : torch.nn.Dropout, optional
        Dropout applied to the branch before the residual is added.

    Returns
    -------
    torch.Tensor, shape (..., out_features)
    """
    if dropout is None or not dropout.training or dropout.p == 0:
        return linear(layer, x, residual)
    out = dropout(linear(layer, x))
    return out if residual is None else residual + out
