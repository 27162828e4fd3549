"""Weights I/O: LaBraM checkpoints (safe loading, key compatibility) and our model files."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib

import numpy as np
import pytest
import torch

from bids_neurobolt.errors import DataError, ExitCode, MissingInputError
from bids_neurobolt.model import NeuroBOLT, NeuroBOLTConfig
from bids_neurobolt.model.weights import (
    LABRAM_SAFE_GLOBALS,
    MODEL_FORMAT,
    ModelMetadata,
    check_compatible,
    file_sha256,
    load_labram_state,
    load_labram_weights,
    load_model,
    model_paths,
    read_labram_state,
    save_model,
)

from .test_model_neurobolt import PAPER_CHANNELS

TINY = NeuroBOLTConfig.sloppy()


def labram_base_checkpoint() -> dict:
    """A checkpoint laid out as LaBraM's labram-base.pth: names and shapes from the dossier.

    Written independently of our model so that a renamed or reshaped parameter fails.
    """
    gen = torch.Generator().manual_seed(0)
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, 200),
        "pos_embed": (1, 129, 200),
        "time_embed": (1, 16, 200),
        "mask_token": (1, 1, 200),
        "patch_embed.conv1.weight": (8, 1, 1, 15),
        "patch_embed.conv2.weight": (8, 8, 1, 3),
        "patch_embed.conv3.weight": (8, 8, 1, 3),
        "norm.weight": (200,),
        "norm.bias": (200,),
        "lm_head.weight": (8192, 200),
        "lm_head.bias": (8192,),
    }
    for i in (1, 2, 3):
        shapes[f"patch_embed.conv{i}.bias"] = (8,)
        shapes[f"patch_embed.norm{i}.weight"] = (8,)
        shapes[f"patch_embed.norm{i}.bias"] = (8,)
    for b in range(12):
        p = f"blocks.{b}."
        shapes.update({
            p + "norm1.weight": (200,), p + "norm1.bias": (200,),
            p + "attn.qkv.weight": (600, 200),
            p + "attn.q_norm.weight": (20,), p + "attn.q_norm.bias": (20,),
            p + "attn.k_norm.weight": (20,), p + "attn.k_norm.bias": (20,),
            p + "attn.proj.weight": (200, 200), p + "attn.proj.bias": (200,),
            p + "norm2.weight": (200,), p + "norm2.bias": (200,),
            p + "mlp.fc1.weight": (800, 200), p + "mlp.fc1.bias": (800,),
            p + "mlp.fc2.weight": (200, 800), p + "mlp.fc2.bias": (200,),
            p + "gamma_1": (200,), p + "gamma_2": (200,),
        })  # fmt: skip
    model = {"student." + k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
    model["lm_head.weight"] = torch.randn(8192, 200, generator=gen)
    model["projection_head.0.weight"] = torch.randn(200, 200, generator=gen)
    model["projection_head.0.bias"] = torch.zeros(200)
    model["logit_scale"] = torch.tensor(2.3)
    return {"model": model, "epoch": 49}


def test_labram_base_checkpoint_loads_into_the_paper_model(tmp_path):
    checkpoint = labram_base_checkpoint()
    path = tmp_path / "labram-base.pth"
    torch.save(checkpoint, path)
    model = NeuroBOLT(PAPER_CHANNELS, 1, seed=0)
    report = load_labram_weights(model, path)
    assert report.n_loaded_parameters == 5_819_536
    assert len(report.loaded) == 3 + 12 + 12 * 17
    assert set(report.missing) == {"fc_norm.weight", "fc_norm.bias"}
    assert set(report.unexpected) == {
        "mask_token", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"
    }  # fmt: skip
    source = checkpoint["model"]
    assert torch.equal(
        model.labram.blocks[7].attn.qkv.weight, source["student.blocks.7.attn.qkv.weight"]
    )
    assert torch.equal(model.labram.pos_embed, source["student.pos_embed"])
    assert torch.equal(
        model.labram.patch_embed.norm3.bias, source["student.patch_embed.norm3.bias"]
    )
    assert "loaded 219 tensors" in report.summary()


def test_checkpoint_without_student_prefix_is_accepted(tmp_path):
    state = {k.removeprefix("student."): v for k, v in labram_base_checkpoint()["model"].items()}
    path = tmp_path / "finetuned.pth"
    torch.save({"model": state}, path)
    loaded = read_labram_state(path)
    assert "blocks.0.attn.qkv.weight" in loaded and "logit_scale" in loaded


def labram_arguments(**changes) -> argparse.Namespace:
    """LaBraM's run_labram_pretraining.py arguments, as save_model stores them."""
    values = dict(
        model="labram_base_patch200_1600_8k_vocab", lr=5e-4, min_lr=1e-5, weight_decay=0.05,
        batch_size=64, epochs=50, input_size=1600, window_size=(1, 8), patch_size=(1, 200),
        drop_path=0.1, rel_pos_bias=False, abs_pos_emb=True, layer_scale_init_value=0.1,
        opt_betas=[0.9, 0.98], clip_grad=3.0, output_dir="./checkpoints/labram_base",
        log_dir=None, device="cuda", seed=0, resume="", auto_resume=True, start_epoch=0,
        num_workers=10, pin_mem=True, world_size=8, rank=0, gpu=0, distributed=True,
        dist_url="env://", dist_backend="nccl",
    )  # fmt: skip
    return argparse.Namespace(**{**values, **changes})


def saved_by_labram(model_state: dict) -> dict:
    """What LaBraM's utils.save_model writes: weights, optimizer, epoch, scaler, args."""
    parameter = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.AdamW([parameter], lr=5e-4, betas=(0.9, 0.98))
    parameter.grad = torch.ones(4)
    optimizer.step()
    return {
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "epoch": 99,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 12},
        "args": labram_arguments(),
    }  # fmt: skip


@functools.cache
def _labram_state() -> dict[str, torch.Tensor]:
    """The labram-base state dict (keys ``student.*`` and heads), built once; never mutated."""
    return labram_base_checkpoint()["model"]


def _layout(name: str) -> object:
    """A checkpoint layout seen in the wild, holding the labram-base state dict."""
    state = _labram_state()
    ddp = {"module." + k: v for k, v in state.items()}
    return {
        "labram save_model": lambda: saved_by_labram(state),
        "model only": lambda: {"model": state},
        "DDP module": lambda: {"module": ddp, "epoch": 3},
        "state_dict": lambda: {"state_dict": state},
        "bare state dict": lambda: dict(state),
        "bare, module. prefix": lambda: ddp,
    }[name]()


@pytest.fixture(scope="module")
def paper_model() -> NeuroBOLT:
    """One paper-size model, shared: each test zeroes its LaBraM branch before loading."""
    return NeuroBOLT(PAPER_CHANNELS, 1, seed=0)


@pytest.mark.parametrize(
    "layout",
    ["labram save_model", "model only", "DDP module", "state_dict", "bare state dict",
     "bare, module. prefix"],
)  # fmt: skip
def test_every_checkpoint_layout_loads_into_the_model(tmp_path, paper_model, layout):
    path = tmp_path / "labram-base.pth"
    torch.save(_layout(layout), path)
    state = read_labram_state(path)
    expected = {
        k.removeprefix("student."): v for k, v in _labram_state().items() if k[:8] == "student."
    }
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    with torch.no_grad():
        for tensor in paper_model.labram.state_dict().values():
            tensor.zero_()
    report = load_labram_state(paper_model, state)
    assert report.n_loaded_parameters == 5_819_536
    loaded = paper_model.labram.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in report.loaded)
    assert torch.equal(
        paper_model.labram.blocks[5].attn.qkv.weight, expected["blocks.5.attn.qkv.weight"]
    )
    # The allow-list was scoped to the load: nothing is left behind.
    assert argparse.Namespace not in torch.serialization.get_safe_globals()


def test_labram_save_model_checkpoint_loads_into_the_model_and_says_what_it_is(tmp_path):
    path = tmp_path / "labram-base.pth"
    torch.save(saved_by_labram(_labram_state()), path)
    model = NeuroBOLT(PAPER_CHANNELS, 1, seed=0)
    report = load_labram_weights(model, path)
    assert report.n_loaded_parameters == 5_819_536
    source = _labram_state()
    assert torch.equal(
        model.labram.blocks[11].mlp.fc2.weight, source["student.blocks.11.mlp.fc2.weight"]
    )
    assert torch.equal(model.labram.time_embed, source["student.time_embed"])
    assert dict(report.checkpoint) == {"model": "labram_base_patch200_1600_8k_vocab", "epoch": "99"}
    assert report.summary().endswith(
        "; checkpoint model labram_base_patch200_1600_8k_vocab, epoch 99"
    )
    bare = tmp_path / "bare.pth"
    torch.save({"model": {"student.cls_token": torch.zeros(1, 1, 200)}}, bare)
    assert read_labram_state(bare).info == ()


def test_only_argparse_namespace_is_allowed_besides_tensors():
    assert (argparse.Namespace,) == LABRAM_SAFE_GLOBALS


def test_scoped_allow_list_also_works_without_safe_globals(tmp_path, monkeypatch):
    """PyTorch 2.4 has add_safe_globals but no safe_globals context manager."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    before = list(torch.serialization.get_safe_globals())
    path = tmp_path / "labram-base.pth"
    torch.save(
        {"model": {"student.cls_token": torch.ones(1, 1, 200)}, "args": labram_arguments()}, path
    )
    assert torch.equal(read_labram_state(path)["cls_token"], torch.ones(1, 1, 200))
    assert set(torch.serialization.get_safe_globals()) == set(before)


class _System:
    """Unpickling this would call os.system, i.e. run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Custom:
    """A harmless custom class: still refused, as any class not on the allow-list."""

    def __init__(self):
        self.value = 1


@pytest.mark.parametrize(
    ("payload", "culprit"),
    [
        ("system", "system"),
        ("custom", "_Custom"),
        ("path in args", "PosixPath"),
    ],
)
def test_other_classes_are_refused_even_beside_labram_arguments(tmp_path, payload, culprit):
    marker = tmp_path / "was-executed"
    checkpoint = saved_by_labram({"student.cls_token": torch.zeros(1, 1, 200)})
    if payload == "system":
        checkpoint["hook"] = _System(f"touch {marker}")
    elif payload == "custom":
        checkpoint["extra"] = _Custom()
    else:
        checkpoint["args"] = labram_arguments(output_dir=pathlib.PosixPath("/ckpt"))
    path = tmp_path / "labram-base.pth"
    torch.save(checkpoint, path)
    with pytest.raises(DataError, match="Python objects other than tensors") as info:
        read_labram_state(path)
    assert culprit in str(info.value) and str(path) in str(info.value)
    assert info.value.exit_code == ExitCode.DATAERR
    assert not marker.exists()
    assert argparse.Namespace not in torch.serialization.get_safe_globals()


class _Payload:
    """Unpickling this would call open(path, 'w'), i.e. run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_refused_not_executed(tmp_path):
    marker = tmp_path / "was-executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 200)}, "hook": _Payload(marker)}, path)
    model = NeuroBOLT(["Cz"], config=TINY, seed=0)
    with pytest.raises(DataError, match="Python objects other than tensors") as info:
        load_labram_weights(model, path)
    assert not marker.exists()
    assert info.value.exit_code == ExitCode.DATAERR
    assert str(path) in str(info.value)


def test_wrong_shapes_are_refused(tmp_path):
    path = tmp_path / "labram-base.pth"
    torch.save(labram_base_checkpoint(), path)
    tiny = NeuroBOLT(["Cz"], config=TINY, seed=0)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(DataError, match=r"cls_token \(1, 1, 200\) vs \(1, 1, 100\)"):
        load_labram_weights(tiny, path)
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing half-loaded


def test_unusable_files(tmp_path):
    model = NeuroBOLT(["Cz"], config=TINY, seed=0)
    with pytest.raises(MissingInputError, match="does not exist"):
        load_labram_weights(model, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="cannot read"):
        load_labram_weights(model, garbage)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, unrelated)
    with pytest.raises(DataError, match="no LaBraM encoder weights"):
        load_labram_weights(model, unrelated)


def _saved_tiny(tmp_path, **fields):
    model = NeuroBOLT(["Fp1", "Cz", "O2"], 2, config=TINY, seed=3).eval()
    meta = ModelMetadata.for_model(
        model, ["Thalamus", "Heschl’s gyrus"], atlas="DiFuMo64", config_hash="abc123",
        target_scaling={"method": "absmax95", "offset": [0.1, 0.2], "scale": [1.5, 2.0]},
        seed=3, **fields,
    )  # fmt: skip
    return model, save_model(model, tmp_path / "sub-01_model", meta)


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model, (weights, json_path) = _saved_tiny(tmp_path, training={"best_epoch": 2})
    assert weights.name == "sub-01_model.safetensors" and json_path.name == "sub-01_model.json"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    loaded, meta = load_model(json_path)
    x = torch.randn(4, 3, 3200)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert meta.roi_names == ("Thalamus", "Heschl’s gyrus")
    assert meta.ch_names == ("Fp1", "Cz", "O2")
    assert (meta.sfreq, meta.window, meta.atlas, meta.config_hash) == (
        200.0,
        16.0,
        "DiFuMo64",
        "abc123",
    )
    assert meta.target_scaling["scale"] == [1.5, 2.0]
    assert meta.training == {"best_epoch": 2}
    assert len(meta.weights_sha256) == 64
    assert NeuroBOLTConfig.from_dict(meta.model_config) == TINY
    assert model_paths(weights) == model_paths(tmp_path / "sub-01_model") == (weights, json_path)


def test_tampered_or_mismatched_model_files_are_refused(tmp_path):
    _, (weights, json_path) = _saved_tiny(tmp_path)
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\x00" * 8)
    with pytest.raises(DataError, match="checksum"):
        load_model(weights)
    weights.write_bytes(original)
    # a description of another architecture with the right checksum
    meta = json.loads(json_path.read_text())
    meta["model_config"]["depth"] = 3
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="do not match the architecture"):
        load_model(weights)
    json_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="does not describe a bids-neurobolt model"):
        load_model(weights)
    json_path.unlink()
    with pytest.raises(MissingInputError):
        load_model(weights)


def test_pickle_in_place_of_safetensors_is_refused(tmp_path):
    _, (weights, json_path) = _saved_tiny(tmp_path)
    torch.save({"x": torch.zeros(2)}, weights)
    meta = json.loads(json_path.read_text())
    meta["weights_sha256"] = ""
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="safetensors"):
        load_model(weights)


def test_compatibility_of_new_data(tmp_path):
    _, (weights, _) = _saved_tiny(tmp_path)
    _, meta = load_model(weights)
    # extra channels, other order and case: fine, with the index to select them
    ok = check_compatible(
        meta, ch_names=["O2", "EOG", "cz", "FP1"], sfreq=200.0,
        roi_names=["Heschl’s gyrus", "Putamen", "Thalamus"],
    )  # fmt: skip
    np.testing.assert_array_equal(ok.channel_index, [3, 2, 0])
    np.testing.assert_array_equal(ok.roi_index, [2, 0])
    assert check_compatible(meta, ch_names=["Fp1", "Cz", "O2"], sfreq=200.0).roi_index is None
    with pytest.raises(DataError, match="channels the data lack: O2"):
        check_compatible(meta, ch_names=["Fp1", "Cz"], sfreq=200.0)
    with pytest.raises(DataError, match="ROIs the data's targets lack: Heschl’s gyrus"):
        check_compatible(meta, ch_names=["Fp1", "Cz", "O2"], sfreq=200.0, roi_names=["Thalamus"])
    with pytest.raises(DataError, match="250"):
        check_compatible(meta, ch_names=["Fp1", "Cz", "O2"], sfreq=250.0)


def test_metadata_must_describe_the_model(tmp_path):
    model = NeuroBOLT(["Cz"], 1, config=TINY, seed=0)
    other = NeuroBOLT(["Pz"], 1, config=TINY, seed=0)
    meta = ModelMetadata.for_model(other, ["Thalamus"])
    with pytest.raises(DataError, match="channels differ"):
        save_model(model, tmp_path / "m", meta)
    with pytest.raises(ValueError, match="outputs"):
        ModelMetadata.for_model(model, ["a", "b"])


def test_per_roi_models_save_load_and_take_labram_weights_in_every_member(tmp_path):
    config = dataclasses.replace(NeuroBOLTConfig(), per_roi=True)
    model = NeuroBOLT(PAPER_CHANNELS, 2, config=config, seed=0)
    source = {k.removeprefix("student."): v for k, v in labram_base_checkpoint()["model"].items()}
    report = load_labram_state(model, source)
    assert report.n_loaded_parameters == 5_819_536
    for member in model.members:
        assert torch.equal(
            member.labram.blocks[7].attn.qkv.weight, source["blocks.7.attn.qkv.weight"]
        )
    meta = ModelMetadata.for_model(model, ["A", "B"], atlas="x", config_hash="h", seed=0)
    _, json_path = save_model(model.eval(), tmp_path / "sub-01_model", meta)
    loaded, read = load_model(json_path)
    assert read.model_config["per_roi"] is True and len(loaded.members) == 2
    x = torch.randn(1, len(PAPER_CHANNELS), 3200)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_identical_models_give_identical_files_that_follow_the_umask(tmp_path):
    import subprocess
    import sys

    from safetensors import safe_open

    old = os.umask(0o022)
    try:
        _, (weights, json_path) = _saved_tiny(tmp_path / "a")
    finally:
        os.umask(old)
    assert weights.stat().st_mode & 0o777 == 0o644 and json_path.stat().st_mode & 0o777 == 0o644
    # another process (another hash-map seed in the safetensors library) writes the same bytes
    script = (
        "import sys; from pathlib import Path; import tests.unit.test_model_weights as t; "
        "t._saved_tiny(Path(sys.argv[1]))"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    for folder in ("b", "c"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / folder)], cwd=root,
                       check=True)  # fmt: skip
        again = tmp_path / folder / weights.name
        assert again.read_bytes() == weights.read_bytes(), folder
    with safe_open(str(weights), framework="pt") as f:
        assert f.metadata() == {"format": MODEL_FORMAT, "config_hash": "abc123"}
    assert json.loads(json_path.read_text())["weights_sha256"] == file_sha256(weights)
