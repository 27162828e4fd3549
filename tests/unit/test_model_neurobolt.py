"""NeuroBOLT architecture: parameter count, shapes, channel embedding lookup, init."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bids_neurobolt.errors import ConfigError, DataError
from bids_neurobolt.model import STANDARD_1020, NeuroBOLT, NeuroBOLTConfig, channel_positions
from bids_neurobolt.model.labram import Attention, Block

#: The paper's 26 channels, in the released files' order.
PAPER_CHANNELS = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                  "T7", "T8", "P7", "P8", "FPZ", "FZ", "CZ", "PZ", "POZ", "OZ", "FT9", "FT10",
                  "TP9", "TP10"]  # fmt: skip
#: Spatial-embedding rows of those channels, from the reference dossier.
PAPER_ROWS = [1, 3, 18, 22, 40, 44, 62, 66, 81, 83, 16, 24, 38, 46, 60, 68, 2, 20, 42, 64,
              75, 82, 26, 36, 48, 58]  # fmt: skip

TINY = NeuroBOLTConfig.sloppy()


def test_paper_parameter_count():
    model = NeuroBOLT(PAPER_CHANNELS, n_outputs=1)
    assert model.n_parameters() == 7_906_985
    labram = sum(p.numel() for n, p in model.named_parameters() if n.startswith("labram."))
    spectral = sum(p.numel() for n, p in model.named_parameters() if n.startswith("spectral."))
    assert labram + model.head.weight.numel() + model.head.bias.numel() == 5_820_137
    assert spectral == 2_086_848
    # the part LaBraM-Base provides: everything in the branch but the new fc_norm
    fc_norm = sum(p.numel() for p in model.labram.fc_norm.parameters())
    assert labram - fc_norm == 5_819_536
    # buffers (channel rows, positions) are not trainable and not saved
    assert "labram.channel_rows" not in model.state_dict()


def test_channel_rows_follow_10_20_names():
    assert channel_positions(PAPER_CHANNELS) == PAPER_ROWS
    assert len(STANDARD_1020) == 136
    # case-insensitive, any subset, any order
    assert channel_positions(["pz", "Fp1", "TP10"]) == [64, 1, 58]


@pytest.mark.parametrize(
    ("names", "match"),
    [(["Cz", "EOG1"], "EOG1"), (["Cz", "CZ"], "repeat"), (["P4-O2"], "P4-O2"), ([], "at least")],
)
def test_unknown_channels_are_config_errors(names, match):
    with pytest.raises(ConfigError, match=match):
        channel_positions(names)


@pytest.mark.parametrize(("n_ch", "n_out"), [(1, 1), (5, 7)])
def test_forward_shapes_any_channel_subset(n_ch, n_out):
    model = NeuroBOLT(PAPER_CHANNELS[-n_ch:], n_outputs=n_out, config=TINY, seed=0).eval()
    x = torch.randn(3, n_ch, TINY.n_times)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (3, n_out)
    assert torch.isfinite(y).all()


def test_wrong_input_shape_is_a_data_error():
    model = NeuroBOLT(["Cz", "Pz"], config=TINY, seed=0)
    with pytest.raises(DataError, match=r"\(batch, 2, 3200\)"):
        model(torch.randn(2, 3, 3200))
    with pytest.raises(DataError):
        model(torch.randn(2, 2, 1600))


def test_seeded_init_is_repeatable_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = NeuroBOLT(["Cz", "Oz"], config=TINY, seed=7)
    after = torch.rand(1)
    b = NeuroBOLT(["Cz", "Oz"], config=TINY, seed=7)
    c = NeuroBOLT(["Cz", "Oz"], config=TINY, seed=8)
    assert torch.equal(before, after)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)


def test_initialisation_follows_the_paper():
    model = NeuroBOLT(["Cz", "Oz"], config=TINY, seed=0)
    # head weights: normal SD 0.02 (truncated at +-2) times 0.001
    assert 1.4e-5 < float(model.head.weight.detach().std()) < 2.6e-5
    assert torch.all(model.head.bias == 0)
    # LayerScale starts at 0.1, spectral channel tokens are standard normal
    assert torch.all(model.labram.blocks[0].gamma_1 == 0.1)
    assert 0.5 < model.spectral.channel_tokens.weight.std() < 1.5
    # residual projections shrink with depth: block 1 is sqrt(2) times smaller than block 0
    std0 = model.labram.blocks[0].attn.proj.weight.detach().std()
    std1 = model.labram.blocks[1].attn.proj.weight.detach().std()
    assert 1.2 < float(std0 / std1) < 1.7


def test_padded_head_attention_equals_plain():
    attn = Attention(dim=40, heads=2).eval()  # head size 20, padded to 24
    x = torch.randn(2, 9, 40)
    attn.pad_heads = False
    plain = attn(x)
    attn.pad_heads = True
    padded = attn(x)
    torch.testing.assert_close(padded, plain, atol=1e-6, rtol=1e-5)


def test_folded_query_key_norms_equal_the_layernorms():
    torch.manual_seed(0)
    attn = Attention(dim=40, heads=2).eval()
    with torch.no_grad():  # non-trivial norms, as in pretrained LaBraM weights
        for norm in (attn.q_norm, attn.k_norm):
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_(0.0, 0.3)
        attn.qkv.weight.add_(0.5)  # queries and keys with a large mean
    x = torch.randn(3, 11, 40)
    plain = attn(x)
    folded = copy.deepcopy(attn)
    folded.fold_qk_norm()
    folded.fold_qk_norm()  # idempotent
    assert folded.qk_folded and not attn.qk_folded
    torch.testing.assert_close(folded(x), plain, atol=1e-5, rtol=1e-4)
    assert set(folded.state_dict()) == set(attn.state_dict())  # only non-persistent buffers


def test_folded_layer_scale_equals_the_scaled_residuals():
    torch.manual_seed(0)
    block = Block(dim=40, heads=2, drop=0.1, drop_path=0.1).eval()
    with torch.no_grad():  # per-feature factors, as after training
        block.gamma_1.uniform_(0.05, 0.5)
        block.gamma_2.uniform_(-0.5, 0.5)
    folded = copy.deepcopy(block)
    folded.fold_layer_scale()
    folded.fold_layer_scale()  # idempotent
    assert folded.layer_scale_folded and not block.layer_scale_folded
    unscaled = copy.deepcopy(block)
    x = torch.randn(3, 11, 40)
    with torch.no_grad():
        plain = block(x)
        torch.testing.assert_close(folded(x), plain, atol=1e-5, rtol=1e-4)
        unscaled.gamma_1.fill_(1.0)
        unscaled.gamma_2.fill_(1.0)
        assert float((unscaled(x) - plain).abs().max()) > 1e-2  # the factors matter here


def test_layer_ids_for_layerwise_decay():
    model = NeuroBOLT(["Cz"], config=TINY, seed=0)
    depth = TINY.depth
    assert model.n_layers == depth + 2
    assert model.layer_id("labram.patch_embed.conv1.weight") == 0
    assert model.layer_id("labram.pos_embed") == 0
    assert model.layer_id("labram.cls_token") == 0
    assert model.layer_id("labram.blocks.0.attn.qkv.weight") == 1
    assert model.layer_id(f"labram.blocks.{depth - 1}.mlp.fc2.bias") == depth
    for name in ("labram.time_embed", "labram.fc_norm.weight", "spectral.freq_proj.0.weight",
                 "head.weight"):  # fmt: skip
        assert model.layer_id(name) == depth + 1


def test_config_round_trip_and_validation():
    config = NeuroBOLTConfig(window=8.0)
    again = NeuroBOLTConfig.from_dict(config.to_dict())
    assert again == config
    assert again.digest() == config.digest() != NeuroBOLTConfig().digest()
    assert (config.n_times, config.n_patches, config.embed_dim) == (1600, 8, 200)
    with pytest.raises(ConfigError):
        NeuroBOLTConfig(window=16.3)
    with pytest.raises(ConfigError, match="unknown"):
        NeuroBOLTConfig.from_dict({"depht": 3})
    with pytest.raises(ConfigError, match="16 patches"):
        NeuroBOLT(["Cz"], config=NeuroBOLTConfig(window=20.0, conv_channels=4, depth=1))


def test_low_precision_copy_keeps_norms_float32_and_predicts_like_float32():
    model = NeuroBOLT(PAPER_CHANNELS[:6], 3, config=TINY, seed=0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = model.low_precision_copy(torch.bfloat16)
    assert all(block.layer_scale_folded and block.attn.qk_folded for block in fast.labram.blocks)
    for name, module in fast.named_modules():
        if isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm):
            assert module.weight.dtype == torch.float32, name
        elif isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Embedding):
            assert module.weight.dtype == torch.bfloat16, name
    for key, value in model.state_dict().items():  # the original is untouched
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    x = torch.randn(8, 6, TINY.n_times)
    with torch.inference_mode():
        ref, low = model(x), fast(x)
    assert low.dtype == torch.bfloat16
    r = torch.corrcoef(torch.stack([ref.ravel(), low.float().ravel()]))[0, 1]
    assert r > 0.999
    assert float((low.float() - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_per_roi_model_is_one_independent_model_per_roi():
    config = dataclasses.replace(TINY, per_roi=True)
    model = NeuroBOLT(["Cz", "Oz"], 3, config=config, seed=0).eval()
    single = NeuroBOLT(["Cz", "Oz"], 1, config=TINY, seed=0)
    assert len(model.members) == 3 and {m.n_outputs for m in model.members} == {1}
    assert model.n_parameters() == 3 * single.n_parameters()
    assert not torch.equal(model.members[0].head.weight, model.members[1].head.weight)
    x = torch.randn(2, 2, TINY.n_times)
    with torch.inference_mode():
        y = model(x)
        assert y.shape == (2, 3)
        for j, member in enumerate(model.members):
            assert torch.equal(y[:, j : j + 1], member(x))
        assert torch.allclose(model.low_precision_copy()(x).float(), y, atol=0.05)
    # the loss of ROI 1 reaches ROI 1's model only: the ROIs share nothing
    model.train()
    model(x)[:, 1].sum().backward()
    for j, member in enumerate(model.members):
        reached = any(p.grad is not None and bool(p.grad.abs().sum()) for p in member.parameters())
        assert reached == (j == 1), j
    assert model.labram_encoders() == [m.labram for m in model.members]
    assert single.labram_encoders() == [single.labram]


def test_per_roi_parameters_keep_their_members_layers():
    model = NeuroBOLT(["Cz"], 2, config=dataclasses.replace(TINY, per_roi=True), seed=0)
    assert model.n_layers == TINY.depth + 2
    assert model.layer_id("members.1.labram.patch_embed.conv1.weight") == 0
    assert model.layer_id("members.0.labram.blocks.1.attn.qkv.weight") == 2
    assert model.layer_id("members.1.head.weight") == TINY.depth + 1
