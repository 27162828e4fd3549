"""Training and prediction loops for NeuroBOLT.

The recipe is the paper's: mean squared error; AdamW (lr 3e-4, betas 0.9/0.999, weight
decay 0.05 except on biases, 1-d parameters and LaBraM's CLS, spatial and temporal
embeddings); a per-step schedule rising linearly from 0 over 5 epochs, then a cosine to
1e-6 (scaled like the rate); 20 epochs; the weights of the epoch with the lowest
validation loss are kept (never chosen on test).

That recipe fine-tunes LaBraM weights. Layer-wise learning-rate decay is then 0.65: the
patch embedding, CLS and spatial embedding get ``0.65**13``, block ``i``
``0.65**(12 - i)``, everything else, the spectral branch included, 1. A randomly
initialised network has nothing to preserve in its lower layers, so from scratch there
is no decay (every layer learns at the full rate); :attr:`TrainConfig.layer_decay` left
at None chooses between the two. From scratch the network also needs more and larger
steps: :meth:`TrainConfig.for_start` gives 30 epochs (3 of warm-up) at lr 1e-3, chosen
on the science benchmark (``docs/benchmarks.md``).

Execution is separate (:class:`Runtime`): on CUDA, bf16 autocast, fused AdamW, windows
kept on the GPU when they fit (pinned host batches otherwise), large evaluation batches,
optional ``torch.compile``; an out-of-memory error splits each batch into micro-batches
with accumulated gradients (the same optimisation, half the memory) and warns. On CPU
the default is float32, a run is repeatable given the seed, and every batch runs as
micro-batches of a few windows, whose activations stay in the processor's caches.

Departures from the reference code, on purpose: the training order is reshuffled every
epoch (the reference, by accident, repeats one order), and the test set is evaluated
only once, after the best epoch is chosen on validation.

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
.. [2] Loshchilov I, Hutter F (2019). Decoupled weight decay regularization. ICLR 2019.
.. [3] Clark K, Luong M-T, Le QV, Manning CD (2020). ELECTRA: Pre-training text
   encoders as discriminators rather than generators. ICLR 2020 (layer-wise decay).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch.nn.parallel import DistributedDataParallel

from bids_neurobolt.errors import ConfigError, DataError, NeuroboltWarning
from bids_neurobolt.model.neurobolt import NeuroBOLT, NeuroBOLTConfig
from bids_neurobolt.model.weights import LoadReport, load_labram_state
from bids_neurobolt.train import distributed
from bids_neurobolt.train.metrics import metrics_table, mse, pearson_r
from bids_neurobolt.train.splits import Split
from bids_neurobolt.train.windows import WindowStack, take_windows

logger = logging.getLogger(__name__)

_NO_DECAY_NAMES = ("cls_token", "pos_embed", "time_embed")
#: Layer-wise learning-rate decay when fine-tuning LaBraM weights (LaBraM's and the paper's).
FINETUNE_LAYER_DECAY = 0.65
#: The recipe from random weights (:meth:`TrainConfig.for_start`); LaBraM weights take
#: the paper's.
FROM_SCRATCH: dict[str, Any] = {"epochs": 30, "warmup_epochs": 3, "lr": 1e-3}
#: Most batches predicted at once on the CPU (each holds its activations in memory).
_MAX_CPU_WORKERS = 8
#: Windows per micro-batch when training on the CPU. On 2 cores, batches of 64 then train
#: 1.3-1.5 times as fast, with a quarter of the peak memory (``docs/benchmarks.md``).
_CPU_MICRO_BATCH = 8


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (changes results; record it).

    Attributes
    ----------
    epochs : int
        Training epochs.
    warmup_epochs : int
        Epochs of linear warm-up from 0 (clipped to ``epochs``).
    batch_size : int
        Windows per optimisation step (16 intra-scan, 64 inter-subject in the paper).
    lr, min_lr : float
        Peak and final learning rate.
    weight_decay : float
        AdamW weight decay.
    layer_decay : float | None
        Layer-wise learning-rate decay of the LaBraM branch; None chooses by the start:
        :data:`FINETUNE_LAYER_DECAY` with LaBraM weights, 1 (no decay) from scratch
        (:meth:`resolved`).
    betas : tuple of float
        AdamW betas.
    eps : float
        AdamW epsilon.
    seed : int
        Seed of the shuffling and dropout.
    drop_last : bool
        Skip the last incomplete training batch of each epoch.
    """

    epochs: int = 20
    warmup_epochs: int = 5
    batch_size: int = 16
    lr: float = 3e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0:
            raise ConfigError(
                "epochs and batch_size must be >= 1 and warmup_epochs >= 0; got "
                f"{self.epochs}, {self.batch_size}, {self.warmup_epochs}."
            )
        decay = 1.0 if self.layer_decay is None else self.layer_decay
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr and 0 < decay <= 1):
            raise ConfigError(
                f"need lr > 0, 0 <= min_lr <= lr and 0 < layer_decay <= 1; got lr={self.lr}, "
                f"min_lr={self.min_lr}, layer_decay={self.layer_decay}."
            )

    @classmethod
    def for_start(cls, pretrained: bool, **changes: Any) -> TrainConfig:
        """Return the recipe for a model that starts from LaBraM weights or from scratch.

        With weights, the paper's fine-tuning recipe (the defaults). From scratch,
        :data:`FROM_SCRATCH`: 30 epochs with 3 of warm-up at lr 1e-3. On the science
        benchmark's linear coupling (600 s run, 8 channels, blocked 5-fold
        cross-validation, CPU-sized model, seed 0) the out-of-sample r was 0.19 after 8
        epochs at lr 1e-3, 0.48 after 30 epochs at lr 1e-3 and 0.40 after 30 at lr 3e-3
        (HRF ridge 0.40): a network trained from random weights on a few hundred windows
        needs a few hundred steps, where the paper's 20 epochs at lr 3e-4 fine-tune.

        Parameters
        ----------
        pretrained : bool
            Whether the LaBraM branch starts from LaBraM weights.
        **changes
            Fields to set on top (``seed``, ``batch_size``...).

        Returns
        -------
        TrainConfig
            With ``layer_decay`` resolved (:meth:`resolved`).
        """
        start = {} if pretrained else FROM_SCRATCH
        return cls(**{**start, **changes}).resolved(pretrained=pretrained)

    @classmethod
    def sloppy(cls, **changes: Any) -> TrainConfig:
        """Two epochs without warm-up, for tests and ``--sloppy`` runs."""
        return dataclasses.replace(cls(epochs=2, warmup_epochs=0, lr=1e-3), **changes)

    def resolved(self, *, pretrained: bool) -> TrainConfig:
        """Fix an automatic ``layer_decay`` for the model's start.

        Parameters
        ----------
        pretrained : bool
            Whether the LaBraM branch starts from LaBraM weights.

        Returns
        -------
        TrainConfig
            ``layer_decay`` :data:`FINETUNE_LAYER_DECAY` (0.65, LaBraM's fine-tuning
            recipe) with weights, 1 without; an explicit value is kept.

        References
        ----------
        .. [1] Jiang W, Zhao L, Lu B (2024). Large brain model for learning generic
           representations with tremendous EEG data in BCI. ICLR 2024.
        """
        if self.layer_decay is not None:
            return self
        decay = FINETUNE_LAYER_DECAY if pretrained else 1.0
        return dataclasses.replace(self, layer_decay=decay)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        return values


@dataclass(frozen=True)
class Runtime:
    """How training and prediction run (does not change the recipe).

    Attributes
    ----------
    device : {"auto", "cpu", "cuda"} or str
        ``"auto"`` picks CUDA when available.
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` is bf16 autocast on CUDA and float32 on CPU. ``"bf16"`` trains with
        bf16 autocast; on the CPU it predicts with a bfloat16 copy of the model
        (:meth:`~bids_neurobolt.model.NeuroBOLT.low_precision_copy`), which avoids
        autocast's per-call casts.
    compile : bool
        Wrap the model with ``torch.compile`` (CUDA: faster after a warm-up).
    eval_batch_size : int | None
        Windows per prediction batch; None is 512 on CUDA and 16 on CPU.
    progress : bool
        Show a progress bar with the running loss.
    resident_fraction : float
        On CUDA, keep all windows in GPU memory when they take less than this fraction
        of the free memory.
    tf32 : bool
        On CUDA, let float32 matrix products use TensorFloat-32 (process-wide setting).
    """

    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    eval_batch_size: int | None = None
    progress: bool = True
    resident_fraction: float = 0.4
    tf32: bool = True

    def torch_device(self) -> torch.device:
        """Return the device to use.

        Raises
        ------
        ConfigError
            When CUDA is asked for but not available.
        """
        if self.device == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but PyTorch sees no CUDA GPU.",
                fix="Use --device auto or cpu, or run the container with --gpus all / --nv.",
            )
        if device.type == "cuda" and self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return device

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """Return the autocast dtype (None for float32)."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            if device.type == "cpu":
                _warn_without_native_bf16()
            return torch.bfloat16
        return None

    def eval_batch(self, device: torch.device) -> int:
        """Return the number of windows per prediction batch."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return 512 if device.type == "cuda" else 16


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    model : NeuroBOLT
        The model with the weights of :attr:`best_epoch`, in evaluation mode.
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``lr``, ``train_loss``, ``val_loss``,
        ``val_pearson_r`` (mean over ROIs), ``seconds``, ``windows_per_second``.
    best_epoch : int
        Epoch (1-based) whose weights were kept (lowest validation loss; the last
        epoch without validation windows).
    predictions : numpy.ndarray, shape (n_windows, n_rois)
        Predictions of the kept model for every window (all sets).
    metrics : pandas.DataFrame
        ``roi``, ``split``, ``n``, ``pearson_r``, ``mse`` for train, val and test.
    seconds : float
        Wall time of training and evaluation.
    device : str
        Device used.
    precision : str
        ``"fp32"`` or ``"bf16"``.
    micro_batches : int
        Micro-batches per step at the end: on CUDA 1 unless memory ran out; on the CPU
        one per :data:`_CPU_MICRO_BATCH` windows of the batch.
    pretrained : LoadReport | None
        Set by :func:`train_neurobolt` when LaBraM weights were loaded.
    """

    model: NeuroBOLT
    history: pd.DataFrame
    best_epoch: int
    predictions: NDArray[np.float32]
    metrics: pd.DataFrame
    seconds: float
    device: str
    precision: str
    micro_batches: int = 1
    pretrained: LoadReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def describe_epoch(row: Mapping[str, Any]) -> str:
    """Return the progress line of one epoch: losses, duration and time left.

    Parameters
    ----------
    row : mapping
        The row the training loop passes to its ``callback`` (``epoch``, ``epochs``,
        ``train_loss``, ``val_loss``, ``val_pearson_r``, ``seconds``).

    Returns
    -------
    str
        For example ``"epoch 3/30: train loss 0.2994, validation loss 0.2321 (r 0.318),
        5.7 s; about 2 min 30 s left"``; without a validation set, ``"no validation set"``.
    """
    epoch, epochs, seconds = int(row["epoch"]), int(row["epochs"]), float(row["seconds"])
    val_loss = float(row["val_loss"])
    validation = (
        f"validation loss {val_loss:.4f} (r {float(row['val_pearson_r']):.3f})"
        if math.isfinite(val_loss)
        else "no validation set"
    )
    line = f"epoch {epoch}/{epochs}: train loss {float(row['train_loss']):.4f}, {validation}"
    left = seconds * (epochs - epoch)
    if epoch == epochs:
        return f"{line}, {seconds:.1f} s"
    minutes, rest = divmod(round(left), 60)
    return f"{line}, {seconds:.1f} s; about {f'{minutes} min ' if minutes else ''}{rest} s left"


def epoch_logger(log: logging.Logger, label: str) -> Callable[[Mapping[str, Any]], None]:
    """Return a training ``callback`` that logs :func:`describe_epoch` as ``label: ...``."""

    def callback(row: Mapping[str, Any]) -> None:
        log.info("%s: %s", label, describe_epoch(row))

    return callback


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (numpy generators are passed explicitly)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def param_groups(
    model: NeuroBOLT, *, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate scales.

    Parameters
    ----------
    model : NeuroBOLT
        The model (its :meth:`~NeuroBOLT.layer_id` gives each parameter's layer).
    weight_decay : float
        Decay of the decayed groups.
    layer_decay : float
        Layer ``l`` gets ``lr_scale = layer_decay ** (n_layers - 1 - l)``.

    Returns
    -------
    list of dict
        Groups with ``params``, ``weight_decay``, ``lr_scale`` and ``layer``. Biases,
        1-d parameters (norms, LayerScale) and the CLS, spatial and temporal
        embeddings are not decayed.

    References
    ----------
    .. [1] Clark K, Luong M-T, Le QV, Manning CD (2020). ELECTRA. ICLR 2020.
    """
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    top = model.n_layers - 1
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name.endswith(_NO_DECAY_NAMES)
        layer = model.layer_id(name)
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (top - layer),
                "layer": layer,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def lr_schedule(
    lr: float, min_lr: float, *, epochs: int, steps_per_epoch: int, warmup_epochs: int
) -> NDArray[np.float64]:
    """Learning rate of every step: linear warm-up from 0, then cosine to ``min_lr``.

    Parameters
    ----------
    lr, min_lr : float
        Peak and final rate.
    epochs, steps_per_epoch, warmup_epochs : int
        Schedule length; warm-up is clipped to the whole schedule.

    Returns
    -------
    numpy.ndarray, shape (epochs * steps_per_epoch,)

    References
    ----------
    .. [1] Loshchilov I, Hutter F (2017). SGDR: Stochastic gradient descent with warm
       restarts. ICLR 2017.
    """
    total = epochs * steps_per_epoch
    n_warm = min(warmup_epochs * steps_per_epoch, total)
    warm = np.linspace(0.0, lr, n_warm)
    n_cos = total - n_warm
    steps = np.arange(n_cos)
    cosine = min_lr + 0.5 * (lr - min_lr) * (1.0 + np.cos(np.pi * steps / max(n_cos, 1)))
    return np.concatenate([warm, cosine])


@functools.cache
def _warn_without_native_bf16() -> None:
    """Warn once when bfloat16 is asked for on a CPU that emulates it (slower than float32)."""
    native = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    if not native:
        logger.warning(
            "--precision bf16: this CPU has neither AMX nor AVX-512 BF16, so bfloat16 is "
            "emulated and slower than float32; use --precision fp32 (or auto) here."
        )


class _Data:
    """Windows and targets served as device tensors, resident on the GPU when they fit."""

    def __init__(
        self,
        windows: ArrayLike | WindowStack | torch.Tensor,
        targets: ArrayLike | None,
        device: torch.device,
        resident_fraction: float,
    ) -> None:
        self.device = device
        self.windows = windows
        self.n = len(windows)  # type: ignore[arg-type]
        self.targets = None
        if targets is not None:
            self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32)).to(device)
        self.resident: torch.Tensor | None = None
        if isinstance(windows, torch.Tensor):
            self.resident = windows.to(device, torch.float32)
        elif device.type == "cuda":
            shape = windows.shape  # type: ignore[union-attr]
            nbytes = 4 * int(np.prod(shape))
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes < resident_fraction * free:
                self.resident = torch.empty(tuple(shape), dtype=torch.float32, device=device)
                for start in range(0, self.n, 1024):
                    idx = np.arange(start, min(start + 1024, self.n))
                    host = torch.from_numpy(take_windows(windows, idx)).pin_memory()
                    self.resident[start : start + idx.size].copy_(host, non_blocking=True)

    def x(self, idx: NDArray[np.int64]) -> torch.Tensor:
        if self.resident is not None:
            return self.resident[torch.as_tensor(idx, device=self.device)]
        batch = torch.from_numpy(take_windows(self.windows, idx))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def y(self, idx: NDArray[np.int64]) -> torch.Tensor:
        if self.targets is None:
            raise ValueError("no targets")
        return self.targets[torch.as_tensor(idx, device=self.device)]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    micro_batches: int = 1,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimisation step on the MSE loss, optionally in micro-batches.

    Parameters
    ----------
    model : torch.nn.Module
        The model (in training mode).
    optimizer : torch.optim.Optimizer
        Its optimiser.
    x, y : torch.Tensor
        Batch inputs ``(batch, n_channels, n_times)`` and targets ``(batch, n_outputs)``.
    micro_batches : int
        Split the batch into this many parts and accumulate their gradients (the same
        step, less memory).
    autocast_dtype : torch.dtype | None
        Autocast dtype, or None for float32.

    Returns
    -------
    torch.Tensor
        The batch loss (0-d, detached, on the model's device).
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=x.device)
    chunks = [
        (xc, yc)
        for xc, yc in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches), strict=True)
        if xc.shape[0]
    ]
    ddp = getattr(model, "_orig_mod", model)
    ddp = ddp if isinstance(ddp, DistributedDataParallel) else None
    for i, (xc, yc) in enumerate(chunks):
        # with several micro-batches, average gradients across processes only once
        sync = ddp is None or i == len(chunks) - 1
        with nullcontext() if sync else ddp.no_sync(), _autocast(x.device, autocast_dtype):  # type: ignore[union-attr]
            out = model(xc)
            loss = F.mse_loss(out.float(), yc)
            (loss * (xc.shape[0] / x.shape[0])).backward()
        total += loss.detach() * (xc.shape[0] / x.shape[0])
    optimizer.step()
    return total


def _predict_indices(
    model: torch.nn.Module,
    data: _Data,
    idx: NDArray[np.int64],
    batch_size: int,
    autocast_dtype: torch.dtype | None,
) -> NDArray[np.float32]:
    model.eval()
    on_cpu = isinstance(model, NeuroBOLT) and data.device.type == "cpu"
    if on_cpu and autocast_dtype is not None:
        model, autocast_dtype = model.low_precision_copy(autocast_dtype), None
    if on_cpu and torch.get_num_threads() > 1 and idx.size > batch_size:
        return _predict_on_cpu_workers(model, data, idx, batch_size)
    outputs = []
    start = 0
    with torch.inference_mode():
        while start < idx.size:
            chunk = idx[start : start + batch_size]
            try:
                with _autocast(data.device, autocast_dtype):
                    out = model(data.x(chunk))
            except RuntimeError as exc:
                if not _is_oom(exc) or batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                warnings.warn(
                    f"NeuroboltWarning: GPU out of memory while predicting; batch size "
                    f"lowered to {batch_size}.",
                    NeuroboltWarning,
                    stacklevel=2,
                )
                torch.cuda.empty_cache()
                continue
            outputs.append(out.float().cpu().numpy())
            start += chunk.size
    if not outputs:
        return np.zeros((0, getattr(model, "n_outputs", 1)), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


def _predict_on_cpu_workers(
    model: torch.nn.Module, data: _Data, idx: NDArray[np.int64], batch_size: int
) -> NDArray[np.float32]:
    """Predict batches concurrently, one single-threaded batch per CPU thread.

    Many of the model's operations scale poorly across threads on small inputs (the
    attention over 20-feature heads, LayerNorm over 20-feature rows, linear layers with
    a bias); several batches at a time, each on one thread, keep every core busy. On two
    cores this predicts 10-15% faster than one batch on two threads
    (``docs/benchmarks.md``). With up to :data:`_MAX_CPU_WORKERS` threads every batch
    runs on one thread, so the predictions do not depend on the thread count (beyond the
    last bits of float32 on some processors, whose kernels block differently).

    PyTorch gives each new thread the thread count set when it first runs an operator,
    so workers started after ``torch.set_num_threads(per_worker)`` keep it; the caller's
    count is restored afterwards.
    """
    threads = torch.get_num_threads()
    workers = min(threads, _MAX_CPU_WORKERS)
    chunks = [idx[start : start + batch_size] for start in range(0, idx.size, batch_size)]

    def run(chunk: NDArray[np.int64]) -> NDArray[np.float32]:
        with torch.inference_mode():
            return model(data.x(chunk)).float().numpy()

    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="neurobolt-predict") as pool:
            outputs = list(pool.map(run, chunks))
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def predict(
    model: NeuroBOLT,
    windows: ArrayLike | WindowStack | torch.Tensor,
    *,
    runtime: Runtime | None = None,
) -> NDArray[np.float32]:
    """Predict every window with a model in evaluation mode.

    Parameters
    ----------
    model : NeuroBOLT
        The model (moved to the runtime's device).
    windows : array-like, shape (n_windows, n_channels, n_times)
        Windows prepared by :func:`~bids_neurobolt.train.windows.make_windows` (arrays,
        memory maps, a :class:`~bids_neurobolt.train.windows.WindowStack` or a tensor).
    runtime : Runtime | None
        Device, precision and batch size; defaults to :class:`Runtime` without a bar.

    Returns
    -------
    numpy.ndarray, shape (n_windows, n_outputs)
        float32 predictions, in the units of the training targets.
    """
    runtime = runtime or Runtime(progress=False)
    device = runtime.torch_device()
    model.to(device)
    runner = torch.compile(model) if runtime.compile else model
    data = _Data(windows, None, device, runtime.resident_fraction)
    idx = np.arange(data.n)
    return _predict_indices(
        runner, data, idx, runtime.eval_batch(device), runtime.autocast_dtype(device)
    )


def _steps_per_epoch(n_train: int, config: TrainConfig) -> tuple[int, int]:
    batch = min(config.batch_size, n_train)
    steps = n_train // batch if config.drop_last else math.ceil(n_train / batch)
    return batch, max(steps, 1)


def _first_micro_batches(device: torch.device, batch: int, world_size: int) -> int:
    """Micro-batches per step before any out-of-memory error (the step is the same).

    On the CPU, the activations of a whole batch (64 windows: 7.5 GB in bfloat16, 12.7 GB
    in float32 for the paper's model) pass through main memory at every layer; those of
    8 windows stay in the caches. On CUDA, large batches keep the GPU busy.
    """
    if device.type != "cpu":
        return 1
    return max(1, math.ceil(math.ceil(batch / world_size) / _CPU_MICRO_BATCH))


def fit(
    model: NeuroBOLT,
    windows: ArrayLike | WindowStack | torch.Tensor,
    targets: ArrayLike,
    split: Split,
    config: TrainConfig | None = None,
    runtime: Runtime | None = None,
    *,
    roi_names: Sequence[str] | None = None,
    callback: Callable[[Mapping[str, Any]], None] | None = None,
    keep_epoch: int | None = None,
) -> FitResult:
    """Train NeuroBOLT on windows and their ROI targets; keep the best validation epoch.

    Parameters
    ----------
    model : NeuroBOLT
        The model to train (modified in place, moved to the device).
    windows : array-like, shape (n_windows, n_channels, n_times)
        Windows from :func:`~bids_neurobolt.train.windows.make_windows` (array, memory
        map, :class:`~bids_neurobolt.train.windows.WindowStack` or tensor).
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets of each window's volume.
    split : Split
        Window indices of the training, validation and test sets.
    config : TrainConfig | None
        The recipe; None is the paper's.
    runtime : Runtime | None
        Device, precision, progress bar.
    roi_names : sequence of str | None
        ROI names for the metrics table (``roi0``, ``roi1``... when None).
    callback : callable | None
        Called with each epoch's history row (a dict), plus ``epochs``, the number planned.
    keep_epoch : int | None
        Keep the weights of this epoch instead of choosing one on validation (a model
        trained on every window, whose epoch cross-validation chose); clipped to the
        epochs run.

    Returns
    -------
    FitResult

    Raises
    ------
    DataError
        When windows and targets disagree, or the training set is empty.

    References
    ----------
    .. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT. NeurIPS 2024.
    """
    config = config or TrainConfig()
    runtime = runtime or Runtime()
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim == 1:
        targets = targets[:, None]
    if len(windows) != targets.shape[0]:  # type: ignore[arg-type]
        raise DataError(
            f"{len(windows)} windows but {targets.shape[0]} target rows."  # type: ignore[arg-type]
        )
    if targets.shape[1] != model.n_outputs:
        raise DataError(
            f"{targets.shape[1]} target columns for a model with {model.n_outputs} outputs."
        )
    if not np.isfinite(targets[np.concatenate([split.train, split.val, split.test])]).all():
        raise DataError("the ROI targets of the selected windows contain NaN or infinite values.")
    if split.train.size == 0:
        raise DataError("the training set has no windows.")
    roi_names = (
        list(roi_names) if roi_names is not None else [f"roi{i}" for i in range(targets.shape[1])]
    )

    started = time.perf_counter()
    device = runtime.torch_device()
    dtype = runtime.autocast_dtype(device)
    seed_everything(config.seed)
    model.to(device)
    rank, world_size = distributed.world()
    trained: torch.nn.Module = model
    if world_size > 1:
        device_ids = (
            [device.index or torch.cuda.current_device()] if device.type == "cuda" else None
        )
        trained = DistributedDataParallel(model, device_ids=device_ids)
        if config.batch_size % world_size:
            logger.warning(
                "batch size %d is not a multiple of the %d processes; their shares differ",
                config.batch_size,
                world_size,
            )
    runner = torch.compile(trained) if runtime.compile else trained
    evaluator = runner if world_size == 1 else (torch.compile(model) if runtime.compile else model)
    data = _Data(windows, targets, device, runtime.resident_fraction)
    layer_decay = 1.0 if config.layer_decay is None else config.layer_decay
    groups = param_groups(model, weight_decay=config.weight_decay, layer_decay=layer_decay)
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, eps=config.eps,
        fused=device.type == "cuda",
    )  # fmt: skip
    batch, steps = _steps_per_epoch(split.train.size, config)
    schedule = lr_schedule(
        config.lr, config.min_lr, epochs=config.epochs, steps_per_epoch=steps,
        warmup_epochs=config.warmup_epochs,
    )  # fmt: skip
    rng = np.random.default_rng(config.seed)
    eval_batch = runtime.eval_batch(device)
    micro = _first_micro_batches(device, batch, world_size)
    best_score, best_epoch, best_state = math.inf, 0, _snapshot(model)
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(config.epochs * steps, runtime.progress and rank == 0)
    step = 0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(split.train)
        model.train()
        losses = []
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = schedule[step] * group["lr_scale"]
            mine = idx[rank::world_size]
            x, y = data.x(mine), data.y(mine)
            while True:
                try:
                    loss = train_step(
                        runner, optimizer, x, y, micro_batches=micro, autocast_dtype=dtype
                    )
                    break
                except RuntimeError as exc:
                    if not _is_oom(exc) or micro >= mine.size:
                        raise
                    micro *= 2
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    warnings.warn(
                        f"NeuroboltWarning: GPU out of memory; each batch of {idx.size} now "
                        f"runs as {micro} micro-batches of about {math.ceil(idx.size / micro)} "
                        "(same optimisation, less memory).",
                        NeuroboltWarning,
                        stacklevel=2,
                    )
            losses.append(loss)
            step += 1
            if bar is not None:
                bar.update(1)
                if s % 10 == 0 or s == steps - 1:
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss):.4f}")
        epoch_loss = torch.stack(losses).mean()
        if world_size > 1:
            torch.distributed.all_reduce(epoch_loss)
            epoch_loss /= world_size
        train_loss = float(epoch_loss)
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": float(schedule[step - 1]),
            "train_loss": train_loss,
            "val_loss": np.nan,
            "val_pearson_r": np.nan,
        }
        if split.val.size:
            val_pred = _predict_indices(evaluator, data, split.val, eval_batch, dtype)
            val_true = targets[split.val]
            row["val_loss"] = _from_rank0(float(mse(val_true, val_pred).mean()), device)
            row["val_pearson_r"] = (
                float(np.nanmean(pearson_r(val_true, val_pred)))
                if val_true.shape[0] > 1
                else np.nan
            )
        seconds = time.perf_counter() - epoch_start
        row["seconds"] = seconds
        row["windows_per_second"] = steps * batch / seconds
        rows.append(row)
        if keep_epoch is not None:
            score = 0.0 if epoch == min(max(keep_epoch, 1), config.epochs) else math.inf
        else:
            score = row["val_loss"] if split.val.size else -epoch
        if best_epoch == 0 or score < best_score:
            best_score, best_epoch, best_state = score, epoch, _snapshot(model)
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.4f}", val=f"{row['val_loss']:.4f}")
        logger.debug("epoch %d: %s", epoch, row)
        if callback is not None:
            callback({**row, "epochs": config.epochs})
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    all_idx = np.arange(data.n)
    predictions = _predict_indices(evaluator, data, all_idx, eval_batch, dtype)
    sets = {"train": split.train, "val": split.val, "test": split.test}
    metrics = metrics_table(targets, predictions, sets, roi_names)
    if not split.val.size and keep_epoch is None:
        logger.warning("no validation windows: keeping the last epoch's weights")
    return FitResult(
        model=model,
        history=pd.DataFrame(rows),
        best_epoch=best_epoch,
        predictions=predictions,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        device=str(device),
        precision="bf16" if dtype is not None else "fp32",
        micro_batches=micro,
    )


def _from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's value in every process (so that all processes choose the same epoch)."""
    if distributed.world()[1] == 1:
        return value
    tensor = torch.tensor(value, dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return float(tensor)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="NeuroBOLT", unit="step", leave=False, dynamic_ncols=True)


def train_neurobolt(
    windows: ArrayLike | WindowStack | torch.Tensor,
    targets: ArrayLike,
    split: Split,
    *,
    ch_names: Sequence[str],
    roi_names: Sequence[str],
    sloppy: bool = False,
    per_roi: bool = False,
    seed: int = 0,
    pretrained: Mapping[str, torch.Tensor] | None = None,
    model_config: NeuroBOLTConfig | None = None,
    train_config: TrainConfig | None = None,
    runtime: Runtime | None = None,
    callback: Callable[[Mapping[str, Any]], None] | None = None,
    keep_epoch: int | None = None,
) -> FitResult:
    """Build, optionally initialise from LaBraM, and train a NeuroBOLT model.

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_channels, n_times)
        Windows (:func:`~bids_neurobolt.train.windows.make_windows`).
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets.
    split : Split
        Train/validation/test windows.
    ch_names, roi_names : sequence of str
        Channels of the windows and ROI columns of the targets.
    sloppy : bool
        Tiny model and two epochs (tests); ignored for parts given explicitly.
    per_roi : bool
        True trains one model per ROI (:attr:`NeuroBOLTConfig.per_roi`) whatever
        ``model_config`` says; False leaves its choice. The ROIs' models train side by
        side on the same batches, and the epoch kept is chosen on their mean validation
        loss.
    seed : int
        Seed of the initial weights, shuffling and dropout.
    pretrained : mapping of str to torch.Tensor | None
        LaBraM encoder weights (:func:`~bids_neurobolt.model.weights.read_labram_state`).
    model_config, train_config : optional
        Architecture and recipe; default to the paper's architecture and the recipe of
        the start (:meth:`TrainConfig.for_start`), or the sloppy ones. An automatic
        layer-wise decay is resolved by the start (:meth:`TrainConfig.resolved`).
    runtime : Runtime | None
        Execution settings.
    callback : callable | None
        Called with each epoch's history row and the number of epochs planned.
    keep_epoch : int | None
        Keep this epoch's weights rather than the best on validation (see :func:`fit`).

    Returns
    -------
    FitResult
        With :attr:`FitResult.pretrained` set when weights were loaded.
    """
    if model_config is None:
        model_config = NeuroBOLTConfig.sloppy() if sloppy else NeuroBOLTConfig()
    if per_roi:
        model_config = dataclasses.replace(model_config, per_roi=True)
    if train_config is None:
        train_config = (
            TrainConfig.sloppy(seed=seed)
            if sloppy
            else TrainConfig.for_start(pretrained is not None, seed=seed)
        )
    model = NeuroBOLT(ch_names, len(roi_names), config=model_config, seed=seed)
    report = load_labram_state(model, pretrained) if pretrained is not None else None
    train_config = train_config.resolved(pretrained=report is not None)
    result = fit(
        model, windows, targets, split, train_config, runtime, roi_names=roi_names,
        callback=callback, keep_epoch=keep_epoch,
    )  # fmt: skip
    result.pretrained = report
    result.extra["train_config"] = train_config.to_dict()
    result.extra["model_config"] = model_config.to_dict()
    return result
