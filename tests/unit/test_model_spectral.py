"""Multi-scale spectral branch against direct numpy computations."""

from __future__ import annotations

import numpy as np
import torch

from bids_neurobolt.model.spectral import (
    LinearAttention,
    LinearAttentionLayer,
    MultiScaleSpectral,
    dft_magnitude,
    sinusoidal_positions,
    stft_magnitude,
)


def numpy_spectrogram(x: np.ndarray, n_fft: int) -> np.ndarray:
    """|rFFT| of consecutive non-overlapping rectangular frames: (signals, frames, freqs)."""
    n_frames = x.shape[-1] // n_fft
    frames = x[..., : n_frames * n_fft].reshape(*x.shape[:-1], n_frames, n_fft)
    return np.abs(np.fft.rfft(frames, axis=-1))


def test_spectrogram_matches_numpy_at_every_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3200))
    for n_fft, (n_frames, n_freqs) in zip(
        (100, 200, 400, 800), ((32, 51), (16, 101), (8, 201), (4, 401)), strict=True
    ):
        expected = numpy_spectrogram(x, n_fft)
        ours = MultiScaleSpectral.spectrogram(torch.from_numpy(x), n_fft).numpy()
        assert ours.shape == (6, n_frames, n_freqs)
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stft_magnitude(torch.from_numpy(x), n_fft), expected, atol=1e-9)
        differentiable = torch.from_numpy(x).requires_grad_(True)
        magnitude = stft_magnitude(differentiable, n_fft)
        np.testing.assert_allclose(magnitude.detach().numpy(), expected, atol=1e-9)
        magnitude.sum().backward()
        assert differentiable.grad is not None and differentiable.grad.abs().sum() > 0
        # the compile-friendly real DFT (float32) agrees to float32 precision
        real_dft = dft_magnitude(torch.from_numpy(x).float(), n_fft).numpy()
        np.testing.assert_allclose(real_dft, expected, rtol=1e-4, atol=1e-4 * expected.max())


def test_spectral_tokens_match_numpy():
    """Frequency projection, window projection, sum over scales, channel token, positions."""
    torch.manual_seed(0)
    n_ch, n_times, dim, steps = 3, 3200, 16, 32
    branch = MultiScaleSpectral(n_ch, n_times, dim=dim, n_steps=steps, depth=1, heads=2).eval()
    x = np.random.default_rng(1).normal(size=(2, n_ch, n_times)).astype(np.float32)
    with torch.no_grad():
        ours = branch.tokens(torch.from_numpy(x)).numpy()
    expected = np.zeros((2, n_ch, steps, dim))
    for n_fft, fp, tp in zip(branch.fft_sizes, branch.freq_proj, branch.time_proj, strict=True):
        spec = numpy_spectrogram(x.astype(np.float64), n_fft)  # (2, ch, frames, freqs)
        wf, bf = fp.weight.detach().double().numpy(), fp.bias.detach().double().numpy()
        wt, bt = tp.weight.detach().double().numpy(), tp.bias.detach().double().numpy()
        per_frame = spec @ wf.T + bf  # (2, ch, frames, dim)
        per_step = np.einsum("sf,bcfd->bcsd", wt, per_frame) + bt[:, None]  # (2, ch, steps, dim)
        expected += per_step
    expected += branch.channel_tokens.weight.detach().numpy()[None, :, None, :]
    expected += sinusoidal_positions(steps, dim).numpy()[None, None]
    np.testing.assert_allclose(ours, expected.reshape(2, n_ch * steps, dim), rtol=2e-4, atol=2e-4)


def test_sinusoidal_positions():
    pe = sinusoidal_positions(32, 200).numpy()
    assert pe.shape == (32, 200)
    np.testing.assert_allclose(pe[0, 0::2], 0.0, atol=1e-7)
    np.testing.assert_allclose(pe[0, 1::2], 1.0, atol=1e-7)
    np.testing.assert_allclose(pe[5, 2], np.sin(5 / 10000 ** (2 / 200)), rtol=1e-6)
    np.testing.assert_allclose(pe[5, 3], np.cos(5 / 10000 ** (2 / 200)), rtol=1e-6)


def test_linear_attention_matches_numpy():
    torch.manual_seed(0)
    dim, heads, n = 12, 3, 7
    attn = LinearAttention(dim, heads).eval()
    x = torch.randn(2, n, dim)
    with torch.no_grad():
        ours = attn(x).numpy()
    xq = x.double().numpy()
    w = attn.qkv.weight.detach().double().numpy()
    q, k, v = (xq @ w[i * dim : (i + 1) * dim].T for i in range(3))
    hd = dim // heads

    def heads_of(t):
        return t.reshape(2, n, heads, hd).transpose(0, 2, 1, 3)  # (b, h, n, hd)

    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    q = np.exp(q) / np.exp(q).sum(-1, keepdims=True) * hd**-0.5  # softmax over features
    k = np.exp(k) / np.exp(k).sum(-2, keepdims=True)  # softmax over the sequence
    out = q @ (k.transpose(0, 1, 3, 2) @ v)
    out = out.transpose(0, 2, 1, 3).reshape(2, n, dim)
    out = out @ attn.to_out.weight.detach().double().numpy().T + attn.to_out.bias.detach().numpy()
    np.testing.assert_allclose(ours, out, rtol=1e-5, atol=1e-6)


def test_bfloat16_inference_attends_all_heads_at_once_like_the_per_head_path():
    torch.manual_seed(0)
    attn = LinearAttention(40, 4).eval().to(torch.bfloat16)
    with torch.no_grad():
        attn.qkv.weight.mul_(4.0)  # peaked softmaxes
    x = torch.randn(3, 50, 40).to(torch.bfloat16)
    with torch.no_grad():
        fast = attn(x).float()  # block-diagonal product of all heads
        reference = attn.float()(x.float())
    per_head = attn.to(torch.bfloat16)(x).float().detach()  # with gradients: per head
    scale = float(reference.abs().max())
    assert float((fast - reference).abs().max()) < 0.03 * scale
    assert float((fast - per_head).abs().max()) < 0.02 * scale


def test_layer_adds_residuals_inside_the_products_in_evaluation():
    torch.manual_seed(0)
    layer = LinearAttentionLayer(40, 4, dropout=0.0)
    x = torch.randn(3, 50, 40)
    with torch.no_grad():
        training = layer.train()(x)
        evaluation = layer.eval()(x)  # float32: the same sums, exactly
        torch.testing.assert_close(evaluation, training, atol=0, rtol=0)
        layer.bfloat16()
        fused = layer(x.bfloat16()).float()  # residuals inside the bf16 products
    assert float((fused - training).abs().max()) < 0.05 * float(training.abs().max())


def test_branch_output_shape_and_channel_independence_of_batching():
    torch.manual_seed(0)
    branch = MultiScaleSpectral(4, 3200, dim=16, depth=1, heads=2).eval()
    x = torch.randn(3, 4, 3200)
    with torch.no_grad():
        whole = branch(x)
        single = torch.cat([branch(x[i : i + 1]) for i in range(3)])
    assert whole.shape == (3, 16)
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-6)
