"""NeuroBOLT: EEG window to ROI BOLD values at the volume that ends it.

Two branches read the same 16 s window: the LaBraM spatiotemporal encoder
(:mod:`.labram`) and the multi-scale spectral encoder (:mod:`.spectral`). Their 200-d
outputs are summed, passed through a GELU and a linear head with one output per ROI.

By default one model predicts every ROI (the branches are shared). With
:attr:`NeuroBOLTConfig.per_roi`, as in the paper, each ROI has a model of its own: the
module holds one single-output NeuroBOLT per ROI and concatenates their outputs, so that
saving, loading, training and prediction treat it as any other NeuroBOLT.

Inputs are EEG windows in units of 100 µV with each channel's mean over the window
removed (:func:`bids_neurobolt.train.windows.make_windows` prepares them).

References
----------
.. [1] Li Y, Lou A, Xu Z, Zhang S, Wang S, Englot DJ, Kolouri S, Moyer D, Bayrak RG,
   Chang C (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis with
   multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
.. [2] Jiang W-B, Zhao L-M, Lu B-L (2024). Large brain model for learning generic
   representations with tremendous EEG data in BCI. ICLR 2024.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bids_neurobolt.errors import ConfigError, DataError
from bids_neurobolt.model.labram import (
    Attention,
    Block,
    LaBraMEncoder,
    conv_output_width,
    init_linear_and_norm,
)
from bids_neurobolt.model.spectral import MultiScaleSpectral


@dataclass(frozen=True)
class NeuroBOLTConfig:
    """Architecture of a NeuroBOLT model (the defaults are the paper's).

    Attributes
    ----------
    sfreq : float
        EEG sampling rate (Hz) the model reads.
    window : float
        Window length (s).
    patch : float
        Patch length of the LaBraM branch (s).
    conv_channels : int
        Temporal-convolution channels; the token size is ``conv_channels * 25`` for
        200-sample patches (200 for LaBraM-Base).
    depth, heads : int
        LaBraM transformer blocks and heads.
    mlp_ratio : float
        LaBraM feed-forward size relative to the token size.
    drop, drop_path : float
        LaBraM dropout and largest stochastic-depth rate.
    layer_scale : float
        Initial LayerScale value.
    spectral_scales : tuple of float
        STFT window (= hop) of each spectral scale (s).
    spectral_steps : int
        Steps each scale is projected to (tokens per channel).
    spectral_depth, spectral_heads : int
        Linear-attention layers and heads.
    spectral_dropout : float
        Dropout after each linear-attention output.
    position_dropout : float
        Dropout after the spectral channel tokens and positions.
    head_activation : bool
        Apply GELU to the fused features before the head (the paper's setting).
    head_init_scale : float
        Factor applied to the head's initial weights and biases.
    per_roi : bool
        One single-output model per ROI (the paper's setting) instead of one model with
        an output per ROI; nothing is shared between the ROIs' models.
    """

    sfreq: float = 200.0
    window: float = 16.0
    patch: float = 1.0
    conv_channels: int = 8
    depth: int = 12
    heads: int = 10
    mlp_ratio: float = 4.0
    drop: float = 0.1
    drop_path: float = 0.1
    layer_scale: float = 0.1
    spectral_scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    spectral_steps: int = 32
    spectral_depth: int = 4
    spectral_heads: int = 8
    spectral_dropout: float = 0.2
    position_dropout: float = 0.1
    head_activation: bool = True
    head_init_scale: float = 0.001
    per_roi: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "spectral_scales", tuple(float(s) for s in self.spectral_scales))
        for name in ("window", "patch"):
            samples = getattr(self, name) * self.sfreq
            if samples <= 0 or abs(samples - round(samples)) > 1e-6:
                raise ConfigError(
                    f"model {name} {getattr(self, name)} s is not a whole number of samples "
                    f"at {self.sfreq} Hz."
                )
        if self.n_times % self.patch_size:
            raise ConfigError(
                f"model window ({self.window} s) is not a whole number of {self.patch} s patches."
            )
        if self.conv_channels % 4:
            raise ConfigError(f"conv_channels must be a multiple of 4; got {self.conv_channels}.")

    @classmethod
    def sloppy(cls) -> NeuroBOLTConfig:
        """Return a tiny model on the same 16 s / 200 Hz windows (tests, ``--sloppy``)."""
        return cls(conv_channels=4, depth=2, heads=4, spectral_depth=1, spectral_heads=4)

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return round(self.window * self.sfreq)

    @property
    def patch_size(self) -> int:
        """Samples per patch."""
        return round(self.patch * self.sfreq)

    @property
    def n_patches(self) -> int:
        """Patches per channel."""
        return self.n_times // self.patch_size

    @property
    def embed_dim(self) -> int:
        """Token size of both branches."""
        return self.conv_channels * conv_output_width(self.patch_size)

    @property
    def fft_sizes(self) -> tuple[int, ...]:
        """STFT window of each spectral scale, in samples."""
        return tuple(round(s * self.sfreq) for s in self.spectral_scales)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in _fields(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NeuroBOLTConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are an error.

        Raises
        ------
        ConfigError
            When ``values`` has keys this version does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown NeuroBOLT model settings {unknown}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def digest(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON form."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fields(config: NeuroBOLTConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


class NeuroBOLT(nn.Module):
    """NeuroBOLT EEG-to-fMRI model: ``(batch, n_channels, n_times)`` to ``(batch, n_outputs)``.

    Parameters
    ----------
    ch_names : sequence of str
        EEG channel names (10-20 notation), in the order of the input's channel axis.
    n_outputs : int
        Number of predicted values (ROIs).
    config : NeuroBOLTConfig | None
        Architecture; None is the paper's (16 s at 200 Hz, 1 s patches, LaBraM-Base).
    seed : int | None
        Seed for the initial weights (the global torch generator is left untouched);
        None draws from the global generator.

    Notes
    -----
    With 26 channels and one output the model has 7,906,985 trainable parameters:
    5,820,137 in the LaBraM branch with the head (5,819,536 of them loadable from
    LaBraM-Base) and 2,086,848 in the spectral branch.

    References
    ----------
    .. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI
       synthesis with multi-dimensional feature mapping. NeurIPS 2024.
    .. [2] Jiang W-B, Zhao L-M, Lu B-L (2024). Large brain model for learning generic
       representations with tremendous EEG data in BCI. ICLR 2024.
    """

    def __init__(
        self,
        ch_names: Sequence[str],
        n_outputs: int = 1,
        *,
        config: NeuroBOLTConfig | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if n_outputs < 1:
            raise ConfigError(f"n_outputs must be >= 1; got {n_outputs}.")
        self.config = config or NeuroBOLTConfig()
        self.ch_names = tuple(ch_names)
        self.n_outputs = int(n_outputs)
        if seed is None:
            self._build()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build()

    def _build(self) -> None:
        config = self.config
        if config.per_roi:
            single = dataclasses.replace(config, per_roi=False)
            self.members = nn.ModuleList(
                NeuroBOLT(self.ch_names, 1, config=single) for _ in range(self.n_outputs)
            )
            return
        self.labram = LaBraMEncoder(
            self.ch_names,
            n_patches=config.n_patches,
            patch_size=config.patch_size,
            conv_channels=config.conv_channels,
            depth=config.depth,
            heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            drop=config.drop,
            drop_path=config.drop_path,
            layer_scale=config.layer_scale,
        )
        self.spectral = MultiScaleSpectral(
            len(self.ch_names),
            config.n_times,
            fft_sizes=config.fft_sizes,
            dim=config.embed_dim,
            n_steps=config.spectral_steps,
            depth=config.spectral_depth,
            heads=config.spectral_heads,
            dropout=config.spectral_dropout,
            position_dropout=config.position_dropout,
        )
        self.head_act = nn.GELU() if config.head_activation else nn.Identity()
        self.head = nn.Linear(config.embed_dim, self.n_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the paper: LaBraM's scheme everywhere, head scaled down.

        Every Linear gets a truncated normal (SD 0.02) with zero bias and every
        LayerNorm unit weight and zero bias; the spectral channel tokens keep a standard
        normal; the head's weights and biases are then multiplied by ``head_init_scale``.
        A per-ROI model initialises each of its members so.
        """
        if self.config.per_roi:
            for member in self.members:
                member.reset_parameters()
            return
        for module in self.modules():
            init_linear_and_norm(module)
        self.labram.reset_parameters()
        nn.init.normal_(self.spectral.channel_tokens.weight)
        with torch.no_grad():
            self.head.weight.mul_(self.config.head_init_scale)
            self.head.bias.mul_(self.config.head_init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ``(batch, n_outputs)`` from EEG windows ``(batch, n_channels, n_times)``.

        Raises
        ------
        DataError
            When the input's channel or sample count differs from the model's.
        """
        if x.ndim != 3 or x.shape[1:] != (len(self.ch_names), self.config.n_times):
            raise DataError(
                f"NeuroBOLT expects windows of shape (batch, {len(self.ch_names)}, "
                f"{self.config.n_times}); got {tuple(x.shape)}."
            )
        if self.config.per_roi:
            return torch.cat([member(x) for member in self.members], dim=1)
        batch, n_ch, _ = x.shape
        patches = x.reshape(batch, n_ch, self.config.n_patches, self.config.patch_size)
        fused = self.labram(patches) + self.spectral(x)
        return self.head(self.head_act(fused))

    def low_precision_copy(self, dtype: torch.dtype = torch.bfloat16) -> NeuroBOLT:
        """Return an inference copy whose weights are stored in ``dtype``.

        Matrix products, convolutions and embeddings then run in ``dtype`` without the
        per-call casts of autocast; LayerNorm and GroupNorm keep float32 parameters
        (their statistics are accumulated in float32 either way), and the STFT is taken
        in float32. The query/key LayerNorms of the attention are folded into matrix
        products (:meth:`~bids_neurobolt.model.labram.Attention.fold_qk_norm`) and the
        LayerScale factors into the layers before them
        (:meth:`~bids_neurobolt.model.labram.Block.fold_layer_scale`). The input stays
        float32 and the output is in ``dtype``. :func:`~bids_neurobolt.train.predict`
        with this copy runs 2.3 times as fast as in float32 on a CPU with AMX and 1.6
        times on one with AVX-512 BF16 only; predictions correlate with float32 ones at
        r > 0.9999 (``docs/benchmarks.md``).

        Parameters
        ----------
        dtype : torch.dtype
            Floating-point type of the weights (``torch.bfloat16``).

        Returns
        -------
        NeuroBOLT
            A copy in evaluation mode; this model is left unchanged.
        """
        clone = copy.deepcopy(self).eval()
        for module in clone.modules():
            if isinstance(module, Attention):
                module.fold_qk_norm()
            if isinstance(module, Block):
                module.fold_layer_scale()
        clone.to(dtype)
        for module in clone.modules():
            if isinstance(module, nn.LayerNorm | nn.GroupNorm):
                module.float()
        return clone

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay.

        Parameters
        ----------
        name : str
            Parameter name as in :meth:`named_parameters`.

        Returns
        -------
        int
            Between 0 (LaBraM embeddings) and :attr:`n_layers` ``- 1`` (LaBraM's last
            block is ``depth``); everything outside the LaBraM blocks and its patch,
            CLS and spatial embeddings is ``n_layers - 1`` (no decay). A per-ROI
            model's parameters (``members.<i>.<name>``) get their member's layer.
        """
        if self.config.per_roi:
            index, _, rest = name.removeprefix("members.").partition(".")
            return self.members[int(index)].layer_id(rest)
        if name.startswith("labram."):
            return self.labram.layer_id(name.removeprefix("labram."))
        return self.config.depth + 1

    def labram_encoders(self) -> list[LaBraMEncoder]:
        """Return the LaBraM branch of each ROI's model (one, unless per ROI)."""
        if self.config.per_roi:
            return [member.labram for member in self.members]
        return [self.labram]

    @property
    def n_layers(self) -> int:
        """Number of distinct layer ids (``depth + 2``)."""
        return self.config.depth + 2

    def n_parameters(self, trainable_only: bool = True) -> int:
        """Count (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
