"""Spatiotemporal branch of NeuroBOLT: the LaBraM-Base encoder.

The EEG window is cut into 1 s patches per channel; a small temporal convolution turns
each patch into a token, a learned *spatial* embedding (looked up by the channel's 10-20
name, so any channel subset works) and a learned *temporal* embedding (by patch
position) are added, and a stack of pre-norm transformer blocks with QK-normalised
attention and LayerScale mixes all tokens. The patch tokens are averaged and normalised
into one vector per window.

Parameter names and shapes are those of LaBraM-Base (``labram_base_patch200_200``), so
the ``student.*`` weights of LaBraM's pre-trained ``labram-base.pth`` load directly
(see :mod:`bids_neurobolt.model.weights`).

References
----------
.. [1] Jiang W-B, Zhao L-M, Lu B-L (2024). Large brain model for learning generic
   representations with tremendous EEG data in BCI. ICLR 2024.
.. [2] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
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

#: LaBraM's list of electrode names: channel ``name`` uses row ``1 + index`` of the
#: spatial embedding (row 0 belongs to the CLS token). Names are matched case-insensitively.
STANDARD_1020: tuple[str, ...] = (
    "FP1", "FPZ", "FP2",
    "AF9", "AF7", "AF5", "AF3", "AF1", "AFZ", "AF2", "AF4", "AF6", "AF8", "AF10",
    "F9", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "F10",
    "FT9", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "FT10",
    "T9", "T7", "C5", "C3", "C1", "CZ", "C2", "C4", "C6", "T8", "T10",
    "TP9", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "TP10",
    "P9", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "P10",
    "PO9", "PO7", "PO5", "PO3", "PO1", "POZ", "PO2", "PO4", "PO6", "PO8", "PO10",
    "O1", "OZ", "O2", "O9", "CB1", "CB2",
    "IZ", "O10", "T3", "T5", "T4", "T6", "M1", "M2", "A1", "A2",
    "CFC1", "CFC2", "CFC3", "CFC4", "CFC5", "CFC6", "CFC7", "CFC8",
    "CCP1", "CCP2", "CCP3", "CCP4", "CCP5", "CCP6", "CCP7", "CCP8",
    "T1", "T2", "FTT9H", "TTP7H", "TPP9H", "FTT10H", "TPP8H", "TPP10H",
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
)  # fmt: skip

#: Rows of LaBraM-Base's spatial embedding that belong to channels (row 0 is the CLS token).
N_SPATIAL_POSITIONS = 128

#: Positions of LaBraM-Base's temporal embedding: at most 16 patches per channel.
N_TEMPORAL_POSITIONS = 16


def channel_positions(ch_names: Sequence[str], n_positions: int = N_SPATIAL_POSITIONS) -> list[int]:
    """Return the spatial-embedding row of each channel (``1 + index in STANDARD_1020``).

    Parameters
    ----------
    ch_names : sequence of str
        EEG channel names in 10-20/10-10 notation (case is ignored: ``Fp1`` is ``FP1``).
    n_positions : int
        Channel rows of the spatial embedding; names beyond them cannot be embedded.

    Returns
    -------
    list of int
        Row of the spatial embedding for each channel, in the given order.

    Raises
    ------
    ConfigError
        When a name is unknown, out of the embedding's range, or repeated.
    """
    index = {name: i for i, name in enumerate(STANDARD_1020)}
    rows, unknown = [], []
    for name in ch_names:
        i = index.get(name.strip().upper())
        if i is None or i >= n_positions:
            unknown.append(name)
        else:
            rows.append(i + 1)
    if unknown:
        raise ConfigError(
            f"the EEG channels {unknown} have no LaBraM spatial embedding (10-20 names "
            f"such as Fp1, Cz, POz, TP10 are known).",
            fix="Rename the channels to 10-20 names in channels.tsv, or exclude them.",
        )
    if len(set(rows)) != len(rows):
        raise ConfigError(f"EEG channel names repeat (case-insensitively): {list(ch_names)}.")
    if not rows:
        raise ConfigError("NeuroBOLT needs at least one EEG channel.")
    return rows


def conv_output_width(patch_size: int) -> int:
    """Width of one patch after the first temporal convolution (kernel 15, stride 8, pad 7)."""
    return (patch_size + 2 * 7 - 15) // 8 + 1


class TemporalConv(nn.Module):
    """LaBraM's patch embedding: three conv - GroupNorm - GELU stages along time.

    The tokens of one window form a one-channel image of height ``n_tokens`` and width
    ``patch_size``; GroupNorm statistics therefore span every patch of the window. The
    result is flattened time-major (feature ``t * out_channels + c``).

    Parameters
    ----------
    out_channels : int
        Convolution channels (8 in LaBraM-Base; a multiple of 4).
    """

    def __init__(self, out_channels: int = 8) -> None:
        super().__init__()
        c = out_channels
        self.conv1 = nn.Conv2d(1, c, kernel_size=(1, 15), stride=(1, 8), padding=(0, 7))
        self.norm1 = nn.GroupNorm(4, c)
        self.gelu1 = nn.GELU()
        self.conv2 = nn.Conv2d(c, c, kernel_size=(1, 3), padding=(0, 1))
        self.norm2 = nn.GroupNorm(4, c)
        self.gelu2 = nn.GELU()
        self.conv3 = nn.Conv2d(c, c, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(4, c)
        self.gelu3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches ``(batch, n_tokens, patch_size)`` into ``(batch, n_tokens, dim)``."""
        batch, n_tokens, _ = x.shape
        x = x.unsqueeze(1)
        x = self.gelu1(self.norm1(self.conv1(x)))
        x = self.gelu2(self.norm2(self.conv2(x)))
        x = self.gelu3(self.norm3(self.conv3(x)))
        return x.permute(0, 2, 3, 1).reshape(batch, n_tokens, -1)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training.

    Parameters
    ----------
    p : float
        Probability of dropping the branch of a sample.

    References
    ----------
    .. [1] Huang G, Sun Y, Liu Z, Sedra D, Weinberger KQ (2016). Deep networks with
       stochastic depth. ECCV 2016.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero the branch of random samples and rescale the others by ``1 / (1 - p)``."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with per-head LayerNorm on queries and keys.

    Uses :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on GPU).
    On CUDA, a head size that fused kernels do not take (LaBraM's is 20) is zero-padded
    to a multiple of 8, which leaves the result unchanged.

    Parameters
    ----------
    dim : int
        Token dimension.
    heads : int
        Attention heads (``dim`` must be a multiple).
    proj_drop : float
        Dropout after the output projection.
    """

    def __init__(self, dim: int, heads: int, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"embedding size {dim} is not a multiple of {heads} heads.")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        #: Pad the head size to a multiple of 8 before attention (None: only on CUDA).
        self.pad_heads: bool | None = None
        #: Whether :meth:`fold_qk_norm` rewrote the layer for inference.
        self.qk_folded = False

    def fold_qk_norm(self) -> None:
        """Rewrite the query and key LayerNorms as matrix products, for inference.

        A LayerNorm over 20-feature heads runs as many tiny reductions, which on the CPU
        cost more than the projection that makes the queries and keys. Centring is
        linear, so it moves into the projection's weights (``W_h <- (I - 1/d) W_h`` for
        each head); the variance of each head is then a product of the squared features
        with a block matrix, and the scale ``rsqrt(var + eps) * weight`` is spread back
        onto the features by another one, applied with the bias in a single
        ``addcmul``. The result equals the LayerNorm up to rounding. The layer is
        changed in place and must not be trained afterwards.
        """
        if self.qk_folded:
            return
        heads, d = self.heads, self.head_dim
        dim = heads * d
        with torch.no_grad():
            centring = torch.eye(d) - 1.0 / d
            weight = self.qkv.weight.detach().float()
            qk = weight[: 2 * dim].view(2 * heads, d, -1)
            weight[: 2 * dim] = (centring @ qk).reshape(2 * dim, -1)
            self.qkv.weight.copy_(weight.to(self.qkv.weight.dtype))
        groups = torch.arange(2 * dim) // d  # head of each query/key feature
        one_hot = (groups[:, None] == torch.arange(2 * heads)).float()
        norms = (self.q_norm, self.k_norm)
        scales = torch.cat([norm.weight.detach().float().repeat(heads) for norm in norms])
        shifts = torch.cat([norm.bias.detach().float().repeat(heads) for norm in norms])
        dtype = self.qkv.weight.dtype
        self.register_buffer("qk_mean_of_squares", (one_hot / d).to(dtype), persistent=False)
        self.register_buffer("qk_spread", (one_hot.T * scales).to(dtype), persistent=False)
        self.register_buffer("qk_shift", shifts.to(dtype), persistent=False)
        self.qk_folded = True

    def _folded_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, n_tokens, dim = x.shape
        # two products, so that the normalisation below runs over contiguous memory
        qk = F.linear(x, self.qkv.weight[: 2 * dim])
        v = F.linear(x, self.qkv.weight[2 * dim :])
        var = (qk * qk) @ self.qk_mean_of_squares
        scale = torch.rsqrt(var.float() + self.q_norm.eps).to(qk.dtype) @ self.qk_spread
        qk = torch.addcmul(self.qk_shift, qk, scale)
        q, k = qk.view(batch, n_tokens, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        v = v.view(batch, n_tokens, self.heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the tokens of ``x`` ``(batch, n_tokens, dim)`` (plus ``residual``)."""
        return fused.project(self.proj, self.attend(x), residual, self.proj_drop)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Return the heads' outputs side by side, before the output projection."""
        batch, n_tokens, dim = x.shape
        if self.qk_folded:
            q, k, v = self._folded_qkv(x)
        else:
            qkv = self.qkv(x).view(batch, n_tokens, 3, self.heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            q = self.q_norm(q).to(v.dtype)
            k = self.k_norm(k).to(v.dtype)
        pad = (-self.head_dim) % 8
        use_pad = x.is_cuda if self.pad_heads is None else self.pad_heads
        if pad and use_pad:
            q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
            out = out[..., : self.head_dim]
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(batch, n_tokens, dim)


class Mlp(nn.Module):
    """Transformer feed-forward: Linear - GELU - Linear - dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the feed-forward network token-wise (plus ``residual``)."""
        return fused.project(self.fc2, linear_gelu(self.fc1, x), residual, self.drop)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale and stochastic depth.

    Parameters
    ----------
    dim, heads : int
        Token dimension and attention heads.
    mlp_ratio : float
        Hidden size of the feed-forward network relative to ``dim``.
    drop : float
        Dropout after the attention projection and the feed-forward network.
    drop_path : float
        Stochastic-depth probability of this block.
    layer_scale : float
        Initial value of the LayerScale factors ``gamma_1`` and ``gamma_2``.

    References
    ----------
    .. [1] Touvron H, Cord M, Sablayrolles A, Synnaeve G, Jégou H (2021). Going deeper
       with image transformers. ICCV 2021 (LayerScale).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        #: Whether :meth:`fold_layer_scale` rewrote the block for inference.
        self.layer_scale_folded = False

    def fold_layer_scale(self) -> None:
        """Move the LayerScale factors into the layers before them, for inference.

        ``gamma * (W h + b)`` equals ``(gamma W) h + gamma b``, so the factors scale the
        rows of the attention's output projection and of the second feed-forward layer.
        The folded block then adds each branch to the residual stream inside that
        layer's product (:func:`~bids_neurobolt.model.fused.linear`), saving two passes
        over the stream per branch. Dropout and stochastic depth are skipped: the block
        is changed in place and must not be trained afterwards.
        """
        if self.layer_scale_folded:
            return
        with torch.no_grad():
            for gamma, layer in ((self.gamma_1, self.attn.proj), (self.gamma_2, self.mlp.fc2)):
                layer.weight.mul_(gamma[:, None].to(layer.weight.dtype))
                layer.bias.mul_(gamma.to(layer.bias.dtype))
        self.layer_scale_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply attention then the feed-forward network, each as a scaled residual."""
        if self.layer_scale_folded:
            x = self.attn(self.norm1(x), residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class LaBraMEncoder(nn.Module):
    """LaBraM encoder with mean pooling: EEG patches to one vector per window.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names (10-20), in the order of the input's channel axis.
    n_patches : int
        Patches per channel (at most :data:`N_TEMPORAL_POSITIONS`).
    patch_size : int
        Samples per patch (200 at 200 Hz).
    conv_channels : int
        Channels of the temporal convolution; the token size is
        ``conv_channels * conv_output_width(patch_size)`` (200 for LaBraM-Base).
    depth, heads : int
        Transformer blocks and attention heads (12 and 10 for LaBraM-Base).
    mlp_ratio : float
        Feed-forward hidden size relative to the token size.
    drop : float
        Dropout after the embeddings, attention projections and feed-forward networks.
    drop_path : float
        Stochastic depth of the last block (rising linearly from 0 in the first).
    layer_scale : float
        Initial LayerScale value.

    References
    ----------
    .. [1] Jiang W-B, Zhao L-M, Lu B-L (2024). Large brain model for learning generic
       representations with tremendous EEG data in BCI. ICLR 2024.
    """

    def __init__(
        self,
        ch_names: Sequence[str],
        *,
        n_patches: int = 16,
        patch_size: int = 200,
        conv_channels: int = 8,
        depth: int = 12,
        heads: int = 10,
        mlp_ratio: float = 4.0,
        drop: float = 0.1,
        drop_path: float = 0.1,
        layer_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= n_patches <= N_TEMPORAL_POSITIONS:
            raise ConfigError(
                f"the LaBraM branch takes 1 to {N_TEMPORAL_POSITIONS} patches per channel; "
                f"got {n_patches}.",
                fix="Use a window of at most 16 patches (16 s with 1 s patches).",
            )
        dim = conv_channels * conv_output_width(patch_size)
        self.dim = dim
        self.depth = depth
        self.n_patches = n_patches
        self.patch_size = patch_size
        self.register_buffer(
            "channel_rows", torch.tensor(channel_positions(ch_names)), persistent=False
        )
        self.patch_embed = TemporalConv(conv_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, N_SPATIAL_POSITIONS + 1, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, N_TEMPORAL_POSITIONS, dim))
        self.pos_drop = nn.Dropout(drop)
        rates = torch.linspace(0.0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, drop=drop, drop_path=rate, layer_scale=layer_scale)
            for rate in rates
        )
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)

    def reset_parameters(self) -> None:
        """LaBraM's initialisation: truncated normal (SD 0.02), residual outputs rescaled.

        Linear weights and the CLS, spatial and temporal embeddings get a truncated
        normal with SD 0.02 and zero biases; the attention output projection and second
        feed-forward layer of block ``i`` are divided by ``sqrt(2 * (i + 1))``.
        """
        for module in self.modules():
            init_linear_and_norm(module)
        for param in (self.cls_token, self.pos_embed, self.time_embed):
            nn.init.trunc_normal_(param, std=0.02)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """Tokens with their embeddings, CLS first: ``(batch, 1 + n_ch * n_patches, dim)``.

        Parameters
        ----------
        patches : torch.Tensor, shape (batch, n_channels, n_patches, patch_size)
            The window cut into patches.
        """
        batch, n_ch, n_patches, patch_size = patches.shape
        patches = patches.to(self.patch_embed.conv1.weight.dtype)
        tokens = self.patch_embed(patches.reshape(batch, n_ch * n_patches, patch_size))
        spatial = self.pos_embed[0, self.channel_rows].repeat_interleave(n_patches, dim=0)
        temporal = self.time_embed[0, :n_patches].repeat(n_ch, 1)
        tokens = tokens + (spatial + temporal).to(tokens.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1).to(tokens.dtype)
        return self.pos_drop(torch.cat([cls, tokens], dim=1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Encode ``(batch, n_channels, n_patches, patch_size)`` into ``(batch, dim)``."""
        x = self.embed(patches)
        for block in self.blocks:
            x = block(x)
        return self.fc_norm(x[:, 1:].mean(dim=1))

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay.

        Parameters
        ----------
        name : str
            Parameter name relative to this module.

        Returns
        -------
        int
            0 for the patch embedding, CLS token and spatial embedding; ``i + 1`` for
            block ``i``; ``depth + 1`` for everything else (temporal embedding, final norm).
        """
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1


def init_linear_and_norm(module: nn.Module) -> None:
    """Truncated-normal (SD 0.02) Linear weights with zero bias; unit/zero LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
