"""Training loop: loss goes down, CPU determinism, recipe (groups, schedule), selection."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from bids_neurobolt.errors import DataError, NeuroboltWarning
from bids_neurobolt.model import NeuroBOLT, NeuroBOLTConfig
from bids_neurobolt.train.loop import (
    FINETUNE_LAYER_DECAY,
    Runtime,
    TrainConfig,
    describe_epoch,
    fit,
    lr_schedule,
    param_groups,
    predict,
    train_neurobolt,
    train_step,
)
from bids_neurobolt.train.splits import Split, intra_scan_split
from bids_neurobolt.train.windows import WindowStack

#: Smaller than the sloppy model (4 s windows) to keep these tests fast on 2 cores.
TINY = NeuroBOLTConfig(
    window=4.0, conv_channels=4, depth=1, heads=4, spectral_depth=1, spectral_heads=4,
    spectral_steps=8,
)  # fmt: skip
N_TIMES = TINY.n_times
CHANNELS = ["Fp1", "Cz", "O1"]
QUIET = Runtime(device="cpu", progress=False)


def toy_problem(n=48, seed=0):
    """Windows whose alpha amplitude drives the two targets (sign-flipped)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIMES) / 200.0
    amp = rng.uniform(0.2, 1.5, size=n)
    x = rng.normal(0, 0.1, size=(n, 3, N_TIMES))
    x += amp[:, None, None] * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, size=(n, 3, 1)))
    y = np.stack([amp - amp.mean(), amp.mean() - amp], axis=1) * 2
    return x.astype(np.float32), y.astype(np.float32)


def test_training_steps_lower_the_loss():
    x, y = toy_problem(16)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.eval()
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(xt), yt).item()
    model.train()
    for _ in range(10):
        train_step(model, optimizer, xt, yt)
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(model(xt), yt).item()
    assert after < 0.5 * before


def test_micro_batches_give_the_same_step():
    x, y = toy_problem(8)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    results = []
    for micro in (1, 4):
        model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0).eval()  # no dropout: exact
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = train_step(model, optimizer, xt, yt, micro_batches=micro)
        results.append((loss, model.head.weight.detach().clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)


def test_cpu_training_runs_in_micro_batches_with_the_same_steps(monkeypatch):
    """On the CPU each batch runs as micro-batches of 8 windows; without dropout the trained
    weights are those of whole batches (up to the order of float32 sums)."""
    from bids_neurobolt.train import loop

    x, y = toy_problem(40)
    split = Split(np.arange(32), np.arange(32, 36), np.arange(36, 40))
    no_dropout = dataclasses.replace(
        TINY, drop=0.0, drop_path=0.0, spectral_dropout=0.0, position_dropout=0.0
    )
    config = TrainConfig.sloppy(batch_size=24, epochs=2)
    results = {}
    for micro_windows in (8, 1000):
        monkeypatch.setattr(loop, "_CPU_MICRO_BATCH", micro_windows)
        model = NeuroBOLT(CHANNELS, 2, config=no_dropout, seed=0)
        results[micro_windows] = fit(model, x, y, split, config, QUIET)
    assert results[8].micro_batches == 3 and results[1000].micro_batches == 1
    np.testing.assert_allclose(
        results[8].history["train_loss"], results[1000].history["train_loss"], rtol=1e-4
    )
    np.testing.assert_allclose(
        results[8].predictions, results[1000].predictions, rtol=1e-3, atol=1e-5
    )
    assert not np.array_equal(results[8].predictions, results[1000].predictions)  # it did split


def run(seed, x, y, split, **kw):
    return train_neurobolt(
        x, y, split, ch_names=CHANNELS, roi_names=["a", "b"], sloppy=True, seed=seed,
        model_config=TINY, runtime=QUIET, **kw,
    )  # fmt: skip


def test_cpu_training_is_deterministic_given_the_seed():
    x, y = toy_problem(40)
    split = Split(np.arange(28), np.arange(30, 35), np.arange(36, 40))
    a, b, c = run(1, x, y, split), run(1, x, y, split), run(2, x, y, split)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    assert not np.array_equal(a.predictions, c.predictions)


def test_best_epoch_is_chosen_on_validation_and_reported():
    x, y = toy_problem(48)
    split = intra_scan_split(48, gap=1)
    rows = []
    result = run(0, x, y, split, train_config=TrainConfig.sloppy(epochs=3), callback=rows.append)
    history = result.history
    assert list(history.columns) == [
        "epoch", "lr", "train_loss", "val_loss", "val_pearson_r", "seconds", "windows_per_second"
    ]  # fmt: skip
    assert len(rows) == 3 and rows[-1]["epoch"] == 3 and rows[0]["epochs"] == 3
    assert result.best_epoch == int(history["val_loss"].idxmin()) + 1
    # the kept weights are the best epoch's: their validation MSE is the logged one
    val = result.metrics.query("split == 'val'")["mse"].mean()
    assert val == pytest.approx(history["val_loss"].min(), rel=1e-5)
    assert set(result.metrics["split"]) == {"train", "val", "test"}
    assert result.predictions.shape == (48, 2)
    assert result.precision == "fp32" and result.device == "cpu"
    assert result.extra["train_config"]["epochs"] == 3


def test_param_groups_follow_the_recipe():
    config = NeuroBOLTConfig(conv_channels=4, heads=4, spectral_depth=1, spectral_heads=4)
    model = NeuroBOLT(["Cz"], 1, config=config, seed=0)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.65)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())

    def group(name):
        return by_param[id(named[name])]

    assert group("labram.patch_embed.conv1.weight")["lr_scale"] == pytest.approx(0.65**13)
    assert group("labram.pos_embed")["lr_scale"] == pytest.approx(0.0037, abs=1e-4)
    assert group("labram.blocks.0.attn.qkv.weight")["lr_scale"] == pytest.approx(0.0057, abs=1e-4)
    assert group("labram.blocks.11.mlp.fc1.weight")["lr_scale"] == pytest.approx(0.65)
    for name in ("labram.time_embed", "labram.fc_norm.weight", "spectral.layers.0.attn.qkv.weight",
                 "head.weight"):  # fmt: skip
        assert group(name)["lr_scale"] == 1.0
    no_decay = (
        "labram.pos_embed", "labram.cls_token", "labram.time_embed", "labram.blocks.3.gamma_1",
        "labram.blocks.3.norm1.weight", "labram.blocks.3.attn.proj.bias",
        "spectral.layers.0.norm1.weight", "head.bias",
    )  # fmt: skip
    for name in no_decay:
        assert group(name)["weight_decay"] == 0.0, name
    for name in ("labram.blocks.3.attn.qkv.weight", "spectral.freq_proj.0.weight",
                 "spectral.channel_tokens.weight", "head.weight"):  # fmt: skip
        assert group(name)["weight_decay"] == 0.05, name
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_layer_decay_is_chosen_by_the_start():
    assert TrainConfig().layer_decay is None
    assert TrainConfig().resolved(pretrained=True).layer_decay == FINETUNE_LAYER_DECAY == 0.65
    assert TrainConfig().resolved(pretrained=False).layer_decay == 1.0
    explicit = TrainConfig(layer_decay=0.8)
    assert explicit.resolved(pretrained=False).layer_decay == 0.8
    assert explicit.resolved(pretrained=True).layer_decay == 0.8


def test_the_recipe_follows_the_start():
    paper = TrainConfig.for_start(True, seed=3)
    assert (paper.epochs, paper.warmup_epochs, paper.lr, paper.layer_decay) == (20, 5, 3e-4, 0.65)
    assert paper.seed == 3
    scratch = TrainConfig.for_start(False, batch_size=64)
    assert (scratch.epochs, scratch.warmup_epochs, scratch.lr) == (30, 3, 1e-3)
    assert (scratch.layer_decay, scratch.batch_size) == (1.0, 64)
    assert TrainConfig.for_start(False, epochs=5).epochs == 5  # explicit fields win


@pytest.mark.parametrize("pretrained", [False, True])
def test_training_without_a_recipe_takes_the_recipe_of_its_start(monkeypatch, pretrained):
    import bids_neurobolt.train.loop as loop

    class Seen(Exception):
        pass

    def spy(model, windows, targets, split, config, *args, **kwargs):
        raise Seen(config)

    monkeypatch.setattr(loop, "fit", spy)
    x, y = toy_problem(n=8)
    split = Split(np.arange(6), np.arange(6, 8), np.zeros(0, dtype=np.int64))
    state = None
    if pretrained:
        state = dict(NeuroBOLT(CHANNELS, 1, config=TINY, seed=5).labram.state_dict())
    with pytest.raises(Seen) as seen:
        train_neurobolt(x, y, split, ch_names=CHANNELS, roi_names=["a", "b"],
                        pretrained=state, model_config=TINY)  # fmt: skip
    assert seen.value.args[0] == TrainConfig.for_start(pretrained)


def test_param_groups_from_scratch_give_every_layer_the_full_rate():
    config = NeuroBOLTConfig(conv_channels=4, heads=4, spectral_depth=1, spectral_heads=4)
    model = NeuroBOLT(["Cz"], 1, config=config, seed=0)
    groups = param_groups(model, weight_decay=0.05, layer_decay=1.0)
    assert {g["lr_scale"] for g in groups} == {1.0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("pretrained", [False, True])
def test_training_applies_the_layer_rates_of_its_start(monkeypatch, pretrained):
    """The optimiser's per-layer rates: all at the schedule's rate from scratch, decayed
    over the LaBraM branch (patch embedding at 0.65**13 of the rate) with LaBraM weights."""
    import bids_neurobolt.train.loop as loop

    seen = []
    real_step = loop.train_step

    def spy(runner, optimizer, *args, **kw):
        seen.append({g["layer"]: g["lr"] for g in optimizer.param_groups})
        return real_step(runner, optimizer, *args, **kw)

    monkeypatch.setattr(loop, "train_step", spy)
    x, y = toy_problem(n=24)
    split = Split(np.arange(16), np.arange(18, 24), np.zeros(0, dtype=np.int64))
    config = dataclasses.replace(TINY, depth=2)
    state = None
    if pretrained:
        donor = NeuroBOLT(CHANNELS, 1, config=config, seed=5)
        state = {k: v.clone() for k, v in donor.labram.state_dict().items()}
    recipe = TrainConfig(epochs=1, warmup_epochs=0, batch_size=8, lr=1e-3)
    result = train_neurobolt(
        x, y, split, ch_names=CHANNELS, roi_names=["a", "b"], pretrained=state,
        model_config=config, train_config=recipe, runtime=QUIET,
    )  # fmt: skip
    decay = 0.65 if pretrained else 1.0
    assert result.extra["train_config"]["layer_decay"] == decay
    assert (result.pretrained is not None) == pretrained
    rates = seen[0]
    top = max(rates)
    assert rates[top] == pytest.approx(1e-3)
    assert rates[0] == pytest.approx(1e-3 * decay**top)
    assert min(rates.values()) == pytest.approx(1e-3 * decay**top)


def test_lr_schedule_warms_up_then_cosine_decays():
    lr = lr_schedule(3e-4, 1e-6, epochs=20, steps_per_epoch=28, warmup_epochs=5)
    assert lr.size == 560
    assert lr[0] == 0.0 and lr[139] == pytest.approx(3e-4)
    assert np.all(np.diff(lr[:140]) > 0) and np.all(np.diff(lr[140:]) <= 0)
    assert lr[140] == pytest.approx(3e-4) and lr[-1] == pytest.approx(1e-6, abs=2e-8)
    short = lr_schedule(1e-3, 0.0, epochs=2, steps_per_epoch=3, warmup_epochs=5)
    assert short.size == 6 and short[-1] == pytest.approx(1e-3)  # warm-up clipped


def test_out_of_memory_splits_batches_and_warns(monkeypatch):
    x, y = toy_problem(24)
    split = Split(np.arange(16), np.arange(16, 20), np.arange(20, 24))
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    forward = model.forward

    def small_batches_only(inputs):
        if model.training and inputs.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return forward(inputs)

    monkeypatch.setattr(model, "forward", small_batches_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(model, x, y, split, TrainConfig.sloppy(batch_size=8, epochs=1), QUIET)
    assert result.micro_batches == 4
    assert any(issubclass(w.category, NeuroboltWarning) for w in caught)
    assert np.isfinite(result.history["train_loss"]).all()


def test_predict_reads_arrays_memory_maps_and_stacks(tmp_path):
    x, _ = toy_problem(10)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    path = tmp_path / "w.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    plain = predict(model, x, runtime=Runtime(device="cpu", progress=False, eval_batch_size=4))
    assert plain.shape == (10, 2) and plain.dtype == np.float32
    np.testing.assert_allclose(predict(model, mapped), plain, rtol=1e-5, atol=1e-7)
    stacked = WindowStack([mapped[:3], mapped[3:]])
    np.testing.assert_allclose(predict(model, stacked), plain, rtol=1e-5, atol=1e-7)


def test_bf16_prediction_on_cpu_uses_a_bfloat16_copy_and_leaves_the_model_alone():
    x, _ = toy_problem(10)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    fp32 = predict(model, x, runtime=QUIET)
    bf16 = predict(model, x, runtime=Runtime(device="cpu", precision="bf16", progress=False))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.inference_mode():
        copy = model.low_precision_copy(torch.bfloat16)(torch.from_numpy(x)).float().numpy()
    np.testing.assert_array_equal(bf16, copy)
    assert np.corrcoef(bf16.ravel(), fp32.ravel())[0, 1] > 0.999
    np.testing.assert_array_equal(predict(model, x, runtime=QUIET), fp32)  # fp32 still exact


def test_cpu_prediction_in_worker_threads_equals_one_thread_and_restores_threads():
    x, _ = toy_problem(11)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    runtime = Runtime(device="cpu", progress=False, eval_batch_size=3)  # 4 batches
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = predict(model, x, runtime=runtime)
        torch.set_num_threads(3)
        workers = predict(model, x, runtime=runtime)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    # equal on some CPUs; on others a kernel's blocking differs in the last bits
    np.testing.assert_allclose(workers, single, rtol=1e-6, atol=1e-9)
    assert workers.shape == (11, 2)


def test_bad_inputs_are_data_errors():
    x, y = toy_problem(10)
    model = NeuroBOLT(CHANNELS, 2, config=TINY, seed=0)
    split = Split(np.arange(6), np.arange(6, 8), np.arange(8, 10))
    with pytest.raises(DataError, match="target rows"):
        fit(model, x, y[:9], split, runtime=QUIET)
    y_nan = y.copy()
    y_nan[7, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit(model, x, y_nan, split, runtime=QUIET)
    with pytest.raises(DataError, match="target columns"):
        fit(model, x, y[:, :1], split, runtime=QUIET)


def test_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, caplog):
    from bids_neurobolt.train import loop

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    loop._warn_without_native_bf16.cache_clear()
    runtime = Runtime(device="cpu", precision="bf16", progress=False)
    # the CLI's logging setup (earlier tests) stops propagation to the root logger, where
    # caplog listens: listen on the module's logger itself
    loop.logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="bids_neurobolt.train.loop"):
            assert runtime.autocast_dtype(torch.device("cpu")) == torch.bfloat16
            runtime.autocast_dtype(torch.device("cpu"))
    finally:
        loop.logger.removeHandler(caplog.handler)
    # a record that also propagated to the root logger is captured twice: count it once
    records = list({id(record): record for record in caplog.records}.values())
    messages = [record.getMessage() for record in records]
    assert len(messages) == 1 and "emulated and slower than float32" in messages[0]
    loop._warn_without_native_bf16.cache_clear()


def test_keep_epoch_keeps_that_epochs_weights_without_validation():
    x, y = toy_problem(n=24)
    split = Split(np.arange(24), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    recipe = TrainConfig(epochs=3, warmup_epochs=0, batch_size=8, lr=1e-3)
    kept = fit(NeuroBOLT(CHANNELS, 2, config=TINY, seed=0), x, y, split, recipe, QUIET,
               keep_epoch=2)  # fmt: skip
    last = fit(NeuroBOLT(CHANNELS, 2, config=TINY, seed=0), x, y, split, recipe, QUIET)
    assert kept.best_epoch == 2 and last.best_epoch == 3
    assert not np.allclose(kept.predictions, last.predictions)


def test_per_roi_training_trains_one_model_per_roi():
    x, y = toy_problem(n=32)
    split = intra_scan_split(32, gap=0)
    recipe = TrainConfig(epochs=2, warmup_epochs=0, batch_size=8, lr=1e-3)
    result = train_neurobolt(
        x, y, split, ch_names=CHANNELS, roi_names=["a", "b"], model_config=TINY,
        train_config=recipe, runtime=QUIET, per_roi=True,
    )  # fmt: skip
    assert result.model.config.per_roi and len(result.model.members) == 2
    assert result.extra["model_config"]["per_roi"] is True
    assert result.predictions.shape == (32, 2)
    # every member's parameters are in the optimiser's groups, at their own layers
    groups = param_groups(result.model, weight_decay=0.05, layer_decay=0.65)
    assert sum(len(g["params"]) for g in groups) == len(list(result.model.parameters()))
    named = dict(result.model.named_parameters())
    by_param = {id(p): g for g in groups for p in g["params"]}
    embed = by_param[id(named["members.1.labram.patch_embed.conv1.weight"])]
    assert embed["lr_scale"] == pytest.approx(0.65 ** (TINY.depth + 1))


def test_epoch_lines_give_progress_and_time_left():
    row = {"epoch": 3, "epochs": 30, "train_loss": 0.29941, "val_loss": 0.23209,
           "val_pearson_r": -0.3181, "seconds": 5.7}  # fmt: skip
    assert describe_epoch(row) == (
        "epoch 3/30: train loss 0.2994, validation loss 0.2321 (r -0.318), 5.7 s; "
        "about 2 min 34 s left"
    )
    last = {**row, "epoch": 30, "val_loss": float("nan"), "val_pearson_r": float("nan")}
    assert describe_epoch(last) == "epoch 30/30: train loss 0.2994, no validation set, 5.7 s"
    assert describe_epoch({**row, "epoch": 28}).endswith("; about 11 s left")
