"""Multi-scale spectral branch of NeuroBOLT.

Each channel's window is turned into magnitude spectrograms at several time scales
(non-overlapping rectangular STFT windows of 0.5, 1, 2 and 4 s by default). At every
scale a *frequency projection* maps each frame's spectrum to a token and a *window
projection* maps the frames to a fixed number of steps (32); the scales are summed. A
learned channel token and sinusoidal positions are added, the steps of all channels form
one sequence, and a few linear-attention transformer layers mix it before mean pooling.

All channels and the whole batch go through one :func:`torch.stft` call per scale; the
only Python loop is over the (few) scales, whose projections have different shapes.

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
.. [2] Yang C, Westover MB, Sun J (2023). BIOT: Biosignal transformer for cross-data
   learning in the wild. NeurIPS 2023.
.. [3] Shen Z, Zhang M, Zhao H, Yi S, Li H (2021). Efficient attention: attention with
   linear complexities. WACV 2021.
.. [4] Vaswani A, Shazeer N, Parmar N, et al. (2017). Attention is all you need.
   NeurIPS 2017 (sinusoidal positions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bids_neurobolt.errors import ConfigError
from bids_neurobolt.model import fused
from bids_neurobolt.model.fused import linear_gelu


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """Sinusoidal position table ``(n_positions, dim)``: sin on even, cos on odd features.

    Parameters
    ----------
    n_positions : int
        Number of positions (0 to ``n_positions - 1``).
    dim : int
        Even feature size.

    Returns
    -------
    torch.Tensor
        ``pe[p, 2i] = sin(p / 10000^(2i/dim))``, ``pe[p, 2i+1] = cos(p / 10000^(2i/dim))``.
    """
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table.float()


def stft_magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``|STFT|`` with :func:`torch.stft`: rectangular window, hop ``n_fft``, no centring.

    Parameters
    ----------
    x : torch.Tensor, shape (n_signals, n_times)
        Signals.
    n_fft : int
        Window and hop length in samples.

    Returns
    -------
    torch.Tensor, shape (n_signals, n_times // n_fft, n_fft // 2 + 1)
        Magnitude per frame and frequency.
    """
    window = torch.ones(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=n_fft,
        win_length=n_fft,
        window=window,
        center=False,
        onesided=True,
        return_complex=True,
    )
    if spec.requires_grad:
        return torch.hypot(spec.real, spec.imag).transpose(1, 2)
    # = abs(), about 25% faster; written frame-major, the layout the projections take
    n_signals, n_freqs, n_frames = spec.shape
    out = torch.empty(n_signals, n_frames, n_freqs, dtype=x.dtype, device=x.device)
    return torch.hypot(spec.real.mT, spec.imag.mT, out=out)


def dft_magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Compute :func:`stft_magnitude` as a real matrix product (for ``torch.compile``).

    Non-overlapping frames are multiplied by the cosine and sine DFT bases in float32
    (outside autocast) and combined into magnitudes.

    Parameters
    ----------
    x : torch.Tensor, shape (n_signals, n_times)
        Signals.
    n_fft : int
        Window and hop length in samples.

    Returns
    -------
    torch.Tensor, shape (n_signals, n_times // n_fft, n_fft // 2 + 1)
    """
    n_frames = x.shape[-1] // n_fft
    frames = x[..., : n_frames * n_fft].reshape(x.shape[0], n_frames, n_fft).float()
    n = torch.arange(n_fft, device=x.device, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, device=x.device, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.outer(n, k) / n_fft
    basis = torch.cat([torch.cos(angle), torch.sin(angle)], dim=1).float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        parts = frames @ basis
    real, imag = parts.chunk(2, dim=-1)
    return torch.sqrt(real.square() + imag.square())


class LinearAttention(nn.Module):
    """Non-causal softmax-kernel linear attention.

    Queries are softmax-normalised over the head features and scaled by
    ``head_dim ** -0.5``, keys over the sequence; the output is ``q (kᵀ v)``, which costs
    O(n) in the sequence length.

    Parameters
    ----------
    dim, heads : int
        Token size and heads (``dim`` a multiple of ``heads``).
    dropout : float
        Dropout after the output projection.

    References
    ----------
    .. [1] Shen Z, Zhang M, Zhao H, Yi S, Li H (2021). Efficient attention: attention
       with linear complexities. WACV 2021.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"spectral token size {dim} is not a multiple of {heads} heads.")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        heads_of = torch.arange(dim) // self.head_dim
        same_head = (heads_of[:, None] == heads_of[None, :]).float()
        self.register_buffer("same_head", same_head, persistent=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over ``x`` ``(batch, n_tokens, dim)`` (plus ``residual``)."""
        return fused.project(self.to_out, self.attend(x), residual, self.dropout)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Return the heads' outputs side by side, before the output projection."""
        if x.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            return self._attend_all_heads(x)
        batch, n_tokens, dim = x.shape
        # Token-major (batch, token, head, feature) throughout: both softmaxes then run
        # over memory that is contiguous in the head features. The one over 25 features
        # is computed in float32, which on CPU is several times faster than bfloat16.
        q, k, v = self.qkv(x).view(batch, n_tokens, 3, self.heads, self.head_dim).unbind(2)
        q = torch.softmax(q, dim=-1, dtype=torch.float32)
        k = torch.softmax(k, dim=1, dtype=torch.float32)
        context = torch.einsum("bnhd,bnhe->bhde", k.to(v.dtype), v)
        out = torch.einsum("bnhd,bhde->bnhe", (q * self.head_dim**-0.5).to(v.dtype), context)
        return out.reshape(batch, n_tokens, dim)

    def _attend_all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``q (kᵀ v)`` of every head as matrix products over all features (bf16 inference).

        The per-head products need the heads moved ahead of the tokens, i.e. copies of
        ``k`` and ``v``; one product of all features, masked to its block diagonal,
        needs none and, in bfloat16 on the CPU, makes the layer about 25% faster despite
        ``heads`` times more arithmetic. Queries, keys and values come from three
        products rather than one, so that each is contiguous: the softmaxes and the
        products then need no copies (another 13%).
        """
        batch, n_tokens, dim = x.shape
        wq, wk, wv = self.qkv.weight.chunk(3)
        q = F.linear(x, wq).view(batch, n_tokens, self.heads, self.head_dim)
        q = torch.softmax(q, dim=-1, dtype=torch.float32).to(x.dtype).view(batch, n_tokens, dim)
        k = torch.softmax(F.linear(x, wk), dim=1)
        context = (k.transpose(1, 2) @ F.linear(x, wv)).mul_(self.same_head)
        return q @ context.mul_(self.head_dim**-0.5)


class FeedForward(nn.Module):
    """Linear - GELU - Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the network token-wise (plus ``residual``)."""
        return fused.linear(self.fc2, linear_gelu(self.fc1, x), residual)


class LinearAttentionLayer(nn.Module):
    """Pre-norm residual layer: ``x += Attn(LN(x)); x += FF(LN(x))``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, ff_mult: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Without dropout (evaluation), each branch is added to ``x`` inside its last
        product (:func:`~bids_neurobolt.model.fused.project`).
        """
        x = self.attn(self.norm1(x), residual=x)
        return self.ff(self.norm2(x), residual=x)


class MultiScaleSpectral(nn.Module):
    """Multi-scale spectral encoder: EEG window ``(batch, n_ch, n_times)`` to ``(batch, dim)``.

    Parameters
    ----------
    n_channels : int
        EEG channels (one learned channel token each).
    n_times : int
        Samples per window.
    fft_sizes : sequence of int
        STFT window (= hop) of each scale, in samples; each must fit in ``n_times``.
    dim : int
        Token size.
    n_steps : int
        Steps every scale is projected to (32), i.e. tokens per channel.
    depth, heads : int
        Linear-attention layers and heads.
    dropout : float
        Dropout after each attention output.
    position_dropout : float
        Dropout after adding channel tokens and positions.
    """

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        *,
        fft_sizes: Sequence[int] = (100, 200, 400, 800),
        dim: int = 200,
        n_steps: int = 32,
        depth: int = 4,
        heads: int = 8,
        dropout: float = 0.2,
        position_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        too_long = [n for n in fft_sizes if not 2 <= n <= n_times]
        if too_long or not fft_sizes:
            raise ConfigError(
                f"spectral scales {list(fft_sizes)} samples must lie between 2 and the "
                f"window's {n_times} samples."
            )
        self.fft_sizes = tuple(int(n) for n in fft_sizes)
        self.n_steps = n_steps
        self.freq_proj = nn.ModuleList(nn.Linear(n // 2 + 1, dim) for n in self.fft_sizes)
        self.time_proj = nn.ModuleList(nn.Linear(n_times // n, n_steps) for n in self.fft_sizes)
        self.channel_tokens = nn.Embedding(n_channels, dim)
        self.register_buffer("positions", sinusoidal_positions(n_steps, dim), persistent=False)
        self.position_drop = nn.Dropout(position_dropout)
        self.layers = nn.ModuleList(LinearAttentionLayer(dim, heads, dropout) for _ in range(depth))

    @staticmethod
    def spectrogram(x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """Magnitude STFT with a rectangular window and hop ``n_fft``, no centring.

        Uses :func:`torch.stft`; under ``torch.compile``, whose code generator has no
        complex numbers, the same transform is done as a real matrix product
        (:func:`dft_magnitude`).

        Parameters
        ----------
        x : torch.Tensor, shape (n_signals, n_times)
            Signals (any number of channels and windows flattened together).
        n_fft : int
            Window and hop length in samples.

        Returns
        -------
        torch.Tensor, shape (n_signals, n_times // n_fft, n_fft // 2 + 1)
            ``|STFT|`` per frame (rows) and frequency (columns).
        """
        if torch.compiler.is_compiling():
            return dft_magnitude(x, n_fft)
        return stft_magnitude(x, n_fft)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Spectral tokens before the transformer: ``(batch, n_ch * n_steps, dim)``.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, n_channels, n_times)
            EEG windows.
        """
        batch, n_ch, n_times = x.shape
        flat = x.reshape(batch * n_ch, n_times).float()
        dtype = self.channel_tokens.weight.dtype  # float32, or a bfloat16 inference copy
        # The time projection multiplies each signal's (frames, dim) matrix from the left,
        # so tokens come out step-major, as the transformer takes them, without the
        # transposed copies of a Linear over frames; its bias is added once at the end.
        summed = None
        for n_fft, freq_proj, time_proj in zip(
            self.fft_sizes, self.freq_proj, self.time_proj, strict=True
        ):
            spec = fused.linear(freq_proj, self.spectrogram(flat, n_fft).to(dtype))
            steps = torch.bmm(time_proj.weight.expand(len(spec), -1, -1), spec)
            summed = steps if summed is None else summed.add_(steps)
        bias = sum(time_proj.bias for time_proj in self.time_proj)[:, None] + self.positions
        bias = self.channel_tokens.weight[:, None, :] + bias  # (n_ch, n_steps, dim)
        emb = summed.view(batch, n_ch, self.n_steps, -1) + bias
        return self.position_drop(emb).reshape(batch, n_ch * self.n_steps, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode EEG windows ``(batch, n_channels, n_times)`` into ``(batch, dim)``."""
        seq = self.tokens(x)
        for layer in self.layers:
            seq = layer(seq)
        return seq.mean(dim=1)
