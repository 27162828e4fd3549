"""Data-parallel training across processes (``torchrun``), for group-level training.

Launch the same command once per GPU (or CPU process) with ``torchrun``; each process
calls :func:`init_distributed` before training and :func:`~bids_neurobolt.train.fit`
notices the process group: every process takes its share of each batch (the global
batch size and the optimisation are unchanged), gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`, and all processes evaluate, select
the best epoch and end with the same weights. Only the main process (rank 0) should
write outputs (:func:`is_main_process`).

Example::

    torchrun --nproc-per-node 4 -m bids_neurobolt ...     # NCCL on GPUs
    torchrun --nproc-per-node 2 script.py                 # gloo on CPU

References
----------
.. [1] Li S, Zhao Y, Varma R, et al. (2020). PyTorch Distributed: experiences on
   accelerating data parallel training. VLDB 13(12):3005-3018.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bids_neurobolt.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Place of the current process in the process group.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, rank on this machine.
    device : str
        ``"cuda:<local_rank>"`` with NCCL, ``"cpu"`` with gloo.
    backend : str
        ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    local_rank: int
    device: str
    backend: str


def world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process should write outputs (rank 0, or no process group)."""
    return world()[0] == 0


def init_distributed(backend: str | None = None) -> DistributedContext | None:
    """Join the process group described by ``torchrun``'s environment variables.

    Parameters
    ----------
    backend : {"nccl", "gloo"} | None
        None picks NCCL when CUDA is available, gloo otherwise.

    Returns
    -------
    DistributedContext | None
        None when the process was not started by ``torchrun`` with more than one
        process (``WORLD_SIZE`` unset or 1).

    Raises
    ------
    ConfigError
        When ``torchrun``'s variables are incomplete.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    missing = [
        v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
    ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} but {', '.join(missing)} are not set.",
            fix="Start data-parallel training with torchrun --nproc-per-node N.",
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    rank, size = world()
    logger.info("data-parallel process %d of %d on %s (%s)", rank, size, device, backend)
    return DistributedContext(rank, size, local_rank, device, backend)


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
