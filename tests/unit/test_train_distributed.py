"""Data-parallel training: two CPU processes on gloo match one process with the same batch."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bids_neurobolt.model import NeuroBOLT, NeuroBOLTConfig
from bids_neurobolt.train.distributed import init_distributed, is_main_process, shutdown, world
from bids_neurobolt.train.loop import Runtime, TrainConfig, fit
from bids_neurobolt.train.splits import Split

#: No dropout anywhere, so that splitting a batch across processes changes nothing.
EXACT = NeuroBOLTConfig(
    window=4.0, conv_channels=4, depth=1, heads=4, spectral_depth=1, spectral_heads=4,
    spectral_steps=8, drop=0.0, drop_path=0.0, spectral_dropout=0.0, position_dropout=0.0,
)  # fmt: skip
CHANNELS = ["Fp1", "Cz"]
CONFIG = TrainConfig(epochs=2, warmup_epochs=0, batch_size=8, lr=1e-3, seed=0)
SPLIT = Split(np.arange(16), np.arange(16, 20), np.arange(20, 24))


def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(24, 2, EXACT.n_times)).astype(np.float32)
    y = np.stack([x[:, 0].std(axis=1), x[:, 1].mean(axis=1)], axis=1).astype(np.float32)
    return x, y


def train_once() -> tuple[np.ndarray, np.ndarray, list[int]]:
    torch.set_num_threads(1)
    x, y = problem()
    model = NeuroBOLT(CHANNELS, 2, config=EXACT, seed=0)
    seen: list[int] = []
    model.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].shape[0]) if module.training else None
    )
    result = fit(model, x, y, SPLIT, CONFIG, Runtime(device="cpu", progress=False))
    return result.predictions, result.history["train_loss"].to_numpy(), seen


def _worker(rank: int, size: int, port: int, out_dir: str) -> None:
    import os

    os.environ.update(
        WORLD_SIZE=str(size), RANK=str(rank), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    context = init_distributed()
    try:
        assert context is not None and context.backend == "gloo"
        assert world() == (rank, size) and is_main_process() == (rank == 0)
        predictions, losses, seen = train_once()
        np.savez(f"{out_dir}/rank{rank}.npz", predictions=predictions, losses=losses, seen=seen)
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_gloo_processes_train_like_one(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    np.testing.assert_array_equal(ranks[0]["predictions"], ranks[1]["predictions"])
    single_predictions, single_losses, single_seen = train_once()
    # each process runs half of every batch of 8: 2 steps per epoch, 2 epochs
    assert single_seen == [8] * 4
    for rank in ranks:
        assert rank["seen"].tolist() == [4] * 4
    np.testing.assert_allclose(ranks[0]["predictions"], single_predictions, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["losses"], single_losses, rtol=1e-4)


def test_without_torchrun_nothing_is_initialised(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() is None
    assert world() == (0, 1) and is_main_process()
