"""Inductive-bias options (CCT tokenizer, sequence pooling, SPT, LSA, GPSA): each checked
against the paper's formula computed directly, against timm, and by parameter count."""

import functools
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import compose_config, run_entry

from vitlab.analysis.attention import attention_rollout, mean_attention_distance
from vitlab.models import VisionTransformer
from vitlab.models.conv_tokenizer import ConvTokenizer
from vitlab.models.gpsa import GatedPositionalSelfAttention, gpsa_blocks
from vitlab.models.lsa import LocalitySelfAttention, lsa_blocks
from vitlab.models.pos_embed import Relative
from vitlab.models.seqpool import SeqPool
from vitlab.models.spt import ShiftedPatchEmbed
from vitlab.runs.build_model import build_model

VARIANTS = ["none", "learned_1d", "learned_2d", "relative", "relative_bias", "sincos_2d", "rope_2d"]


def count(model):
    return sum(p.numel() for p in model.parameters())


def preset(name, *overrides):
    cfg = compose_config([f"model={name}", "data=fake", *overrides])
    return build_model(cfg.model)


def test_sequence_pooling_is_the_softmax_weighted_sum_of_the_tokens():
    torch.manual_seed(0)
    pool, x = SeqPool(6), torch.randn(2, 5, 6)
    g = x @ pool.attention_pool.weight[0] + pool.attention_pool.bias  # (B, N): g(x_L)
    w = torch.exp(g) / torch.exp(g).sum(dim=1, keepdim=True)
    expected = torch.stack([sum(w[b, n] * x[b, n] for n in range(5)) for b in range(2)])
    torch.testing.assert_close(pool(x), expected)


def test_spt_concatenates_four_diagonal_half_patch_shifts_then_norms_and_projects():
    torch.manual_seed(0)
    C, H, P = 2, 8, 4
    spt, x = ShiftedPatchEmbed(H, P, C, 5), torch.randn(1, C, H, H)
    s = P // 2

    def shifted(dy, dx):  # pixel (i, j) of the copy shows (i + dy, j + dx), zero outside
        out = torch.zeros_like(x)
        for i in range(H):
            for j in range(H):
                if 0 <= i + dy < H and 0 <= j + dx < H:
                    out[..., i, j] = x[..., i + dy, j + dx]
        return out

    copies = torch.cat([x, shifted(-s, -s), shifted(-s, s), shifted(s, -s), shifted(s, s)], dim=1)
    rows = [copies[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P].flatten()
            for r in range(H // P) for c in range(H // P)]  # raster order, (channel, y, x) flat
    tokens, grid = spt(x)
    expected = spt.proj(F.layer_norm(torch.stack(rows), (5 * C * P * P,), spt.norm.weight, spt.norm.bias))
    assert grid == (2, 2) and tokens.shape == (1, 4, 5)
    torch.testing.assert_close(tokens[0], expected)


def test_lsa_learns_a_temperature_per_head_and_masks_each_tokens_attention_to_itself():
    torch.manual_seed(0)
    attn, x = LocalitySelfAttention(8, 2), torch.randn(2, 5, 8)
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.3, 1.7]))
    q, k, v = attn.qkv(x).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1)) * attn.temperature.view(1, 2, 1, 1)
    logits = logits.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(attn(x), attn.proj(out))
    maps = attn.attention_logits(x).softmax(-1)
    assert torch.all(maps.diagonal(dim1=-2, dim2=-1) == 0)
    assert attn.temperature.shape == (2,)


def test_lsa_starts_as_standard_attention_off_the_diagonal():
    assert torch.allclose(LocalitySelfAttention(8, 2).temperature, torch.full((2,), 0.5))


def test_conv_tokenizer_grid_follows_the_conv_and_pool_arithmetic():
    for layers, side in [(1, 16), (2, 8), (3, 4)]:
        tok = ConvTokenizer(32, 4, 3, 16, num_layers=layers)
        tokens, grid = tok(torch.randn(2, 3, 32, 32))
        assert tok.grid == grid == (side, side) and tokens.shape == (2, side * side, 16)
    assert ConvTokenizer(32, 4, 3, 16, max_pool=False).grid == (32, 32)
    with pytest.raises(ValueError, match="shrink"):
        ConvTokenizer(8, 4, 3, 16, num_layers=2, kernel_size=7, padding=0)


def cct_reference_count(dim=256, depth=7, mlp=512, classes=10, tokens=256, channels=3):
    """SHI-Labs' cct_7_3x1_32 counted layer by layer: conv 3x3 (no bias), learnable positions,
    blocks (pre_norm, qkv without bias, proj, norm1, linear1, linear2), norm, attention_pool, fc."""
    block = 2 * dim + 3 * dim * dim + dim * dim + dim + 2 * dim + dim * mlp + mlp + mlp * dim + dim
    return channels * dim * 9 + tokens * dim + depth * block + 2 * dim + dim + 1 + dim * classes + classes


def test_cct_7_3x1_has_the_published_architectures_parameter_count():
    model = preset("cct_7_3x1", "data.img_size=32", "data.in_chans=3", "data.num_classes=10")
    assert count(model) == cct_reference_count() == 3_760_139
    assert model.embed.grid == (16, 16) and model.cls_token is None
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_sl_vit_has_the_authors_cifar_parameter_count():
    model = preset("sl_vit", "data.img_size=32", "data.in_chans=3", "data.num_classes=10")
    d, m = 192, 384
    spt = 2 * 240 + 240 * d + d
    block = 2 * d + 3 * d * d + d * d + d + 2 * d + d * m + m + m * d + d + 12  # + LSA temperatures
    assert count(model) == spt + 65 * d + d + 9 * block + 2 * d + 10 * d + 10 == 2_729_878
    assert all(isinstance(b.attn, LocalitySelfAttention) for b in model.blocks)


def test_convit_tiny_preset_has_timms_parameter_count():
    model = preset("convit_tiny", "data.img_size=224", "data.in_chans=3", "data.num_classes=1000")
    with torch.device("meta"):
        reference = timm.create_model("convit_tiny")
    assert count(model) == count(reference) == 5_710_512
    assert model.class_token_at == 10
    gpsa = [isinstance(b.attn, GatedPositionalSelfAttention) for b in model.blocks]
    assert gpsa == [True] * 10 + [False] * 2


def test_gpsa_model_equals_timms_convit_given_the_same_weights():
    torch.manual_seed(0)
    ref = timm.create_model("convit_tiny", img_size=32, patch_size=8, embed_dim=8, num_heads=4, depth=3,
                            local_up_to_layer=2, num_classes=10).eval()
    gpsa = functools.partial(gpsa_blocks, local_blocks=2)
    ours = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=3, num_heads=4, qkv_bias=False,
                             class_token_at=2, attention=gpsa).eval()
    state = {("embed." + k[12:] if k.startswith("patch_embed.") else
              "pos_embed.weight" if k == "pos_embed" else k): v for k, v in ref.state_dict().items()}
    ours.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_gpsa_starts_local_as_timm_initialises_it():
    torch.manual_seed(0)
    ref = timm.create_model("convit_tiny", img_size=32, patch_size=8, embed_dim=8, num_heads=4, depth=2,
                            local_up_to_layer=2, num_classes=10)
    ours = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4, qkv_bias=False,
                             class_token_at=1, attention=functools.partial(gpsa_blocks, local_blocks=2))
    for name in ("pos_proj.weight", "v.weight", "gating_param"):
        torch.testing.assert_close(ours.blocks[0].attn.get_parameter(name),
                                   ref.blocks[0].attn.get_parameter(name))
    torch.testing.assert_close(ours.blocks[0].attn.rel_indices, ref.blocks[0].attn.get_rel_indices(16)[0])


def test_gpsa_rejects_a_class_token_in_its_blocks_and_late_tokens_reject_relative_positions():
    model = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4,
                              attention=functools.partial(gpsa_blocks, local_blocks=1))
    with pytest.raises(ValueError, match="patch tokens only"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="acts inside attention"):
        VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4, class_token_at=1,
                          pos_embed=functools.partial(Relative))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_positional_variant_composes_with_each_option(variant):
    """SPT + GPSA + mean pooling, conv tokenizer + LSA + class token + seqpool: all train a step."""
    combos = [["+model/embed=spt", "+model/attention=gpsa", "model.attention.local_blocks=2",
               "model.pool=mean"],
              ["+model/embed=conv_tokenizer", "model.embed.num_layers=2", "+model/attention=lsa",
               "model.pool=seqpool"],
              ["+model/attention=lsa"]]  # with a class token
    for extra in combos:
        cfg = compose_config(["data=fake", "data.img_size=16", f"model/pos_embed={variant}",
                              "model.patch_size=4", *extra])
        model = build_model(cfg.model)
        x = torch.randn(2, cfg.data.in_chans, 16, 16)
        model(x).sum().backward()
        maps = model.attention_maps(x)
        assert len(maps) == 4 and torch.allclose(maps[0].sum(-1), torch.ones(()))


def test_attention_analysis_handles_a_class_token_that_joins_late():
    model = preset("convit_tiny", "data.img_size=32", "data.in_chans=3", "model.patch_size=8",
                   "model.depth=3", "model.attention.local_blocks=2")
    x = torch.randn(2, 3, 32, 32)
    maps = model.attention_maps(x)
    assert [m.shape[-1] for m in maps] == [16, 16, 17]
    distance = mean_attention_distance(maps, (4, 4), num_prefix=1, pixels_per_token=8)
    assert distance.shape == (3, 4) and torch.all(distance > 0)
    rollout = attention_rollout(maps)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 17))


@pytest.mark.parametrize("bias", ["pure", "spt", "lsa", "spt_lsa", "cct", "gpsa", "hybrid"])
def test_the_study_variants_compose_and_keep_the_token_count(bias):
    cfg = compose_config(["experiment=inductive_bias", f"bias={bias}"])
    model = build_model(cfg.model)
    assert model.embed.grid == (4, 4)  # every variant: 16 tokens at 32 px, as vit_micro
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_lsa_blocks_and_gpsa_blocks_choose_their_blocks():
    kw = dict(grid=(2, 2), depth=4, dim=8, num_heads=2, qkv_bias=True, attn_drop=0.0, proj_drop=0.0)
    assert isinstance(lsa_blocks(3, **kw), LocalitySelfAttention)
    assert lsa_blocks(1, blocks=1, **kw) is None
    assert [lsa_blocks(i, blocks=-1, **kw) is None for i in range(4)] == [False, False, False, True]
    assert isinstance(gpsa_blocks(0, local_blocks=1, **kw), GatedPositionalSelfAttention)
    assert gpsa_blocks(1, local_blocks=1, **kw) is None
    assert [gpsa_blocks(i, local_blocks=-1, **kw) is None for i in range(4)] == [False, False, False, True]


@pytest.mark.parametrize("depth", [4, 7])
def test_the_study_gpsa_variant_keeps_all_blocks_but_the_last_local_at_any_depth(depth):
    cfg = compose_config(["experiment=inductive_bias", "bias=gpsa", f"model.depth={depth}"])
    model = build_model(cfg.model)
    gpsa = [isinstance(b.attn, GatedPositionalSelfAttention) for b in model.blocks]
    assert gpsa == [True] * (depth - 1) + [False] and model.class_token_at == depth - 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_flop_counts_cover_the_options():
    """CCT-7/3x1: 1.19 G multiply-adds per 32 px image (the CCT paper's figure); GPSA's separate
    q,k and v projections cost what one fused qkv costs; SPT's stem is counted by its shapes."""
    from vitlab.flops import vit_macs

    cct = preset("cct_7_3x1", "data.img_size=32", "data.in_chans=3", "data.num_classes=10")
    assert sum(vit_macs(cct, 32).values()) / 1e9 == pytest.approx(1.19, abs=0.005)
    gpsa = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4, pool="mean",
                             attention=functools.partial(gpsa_blocks, local_blocks=1))
    plain = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4, pool="mean")
    assert vit_macs(gpsa, 32)["qkv"] == vit_macs(plain, 32)["qkv"]
    spt = VisionTransformer(32, 8, 3, 10, embed_dim=32, depth=2, num_heads=4, embed=ShiftedPatchEmbed)
    assert vit_macs(spt, 32)["embed"] == 16 * (5 * 3 * 64) * 32


@pytest.mark.parametrize("options", [
    dict(embed=ConvTokenizer, pool="seqpool"),
    dict(embed=ShiftedPatchEmbed, attention=lsa_blocks),
    dict(attention=functools.partial(gpsa_blocks, local_blocks=1), class_token_at=1),
], ids=["cct", "spt_lsa", "gpsa"])
def test_each_option_traces_as_one_graph(options):
    """torch.compile (the GPU recipes) sees each option without a graph break."""
    model = VisionTransformer(16, 4, 3, 10, embed_dim=32, depth=2, num_heads=4, **options).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert explained.graph_break_count == 0, explained.break_reasons


def test_a_run_with_spt_and_lsa_trains_every_step_validates_and_records_distances(tmp_path):
    """Through the real entry point, past the logging steps where throughput counts FLOPs (a
    StopIteration there once ended every epoch after 10 steps, without validation)."""
    run_dir = tmp_path / "run"
    result = run_entry("train.py", ["+model/embed=spt", "+model/attention=lsa", "model.depth=2",
                                    "trainer.max_epochs=1", "trainer.log_every_n_steps=5",
                                    "data.train_fraction=0.5", "trainer.enable_progress_bar=false",
                                    f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == -(-summary["train_images"] // 32)  # every batch of the epoch
    assert summary["val"]["best"] is not None and len(summary["attention_distance"]) == 2
