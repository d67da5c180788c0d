"""Positional embeddings: the properties each variant promises, not just shapes."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import create_autospec

import pytest
import torch
from conftest import CONF, compose_config, run_entry
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf
from torch import nn

from vitlab.analysis import position_similarity
from vitlab.callbacks.pos_similarity import PositionSimilarity
from vitlab.errors import ConfigError
from vitlab.models import VisionTransformer
from vitlab.models.layers import Attention
from vitlab.models.pos_embed.sincos_2d import sincos_2d_table
from vitlab.runs.build_model import build_model
from vitlab.training.config_checks import validate

KEYS = ["none", "learned_1d", "learned_2d", "relative", "relative_bias", "sincos_2d", "rope_2d"]
ABSOLUTE = ["learned_1d", "learned_2d", "sincos_2d"]
LEARNED = ["learned_1d", "learned_2d"]
RELATIVE = ["relative", "relative_bias", "rope_2d"]


def factory(key: str, **options):
    """The variant exactly as its config file builds it."""
    return instantiate(OmegaConf.load(CONF / "model" / "pos_embed" / f"{key}.yaml"), **options)


def tiny(key: str, img: int = 16, pool: str = "cls", seed: int = 0, **options):
    torch.manual_seed(seed)
    return VisionTransformer(img_size=img, patch_size=4, in_chans=3, num_classes=5, embed_dim=32,
                             depth=2, num_heads=2, pool=pool,
                             pos_embed=factory(key, **options)).eval()


def shuffle_patches(images: torch.Tensor, p: int, perm: torch.Tensor) -> torch.Tensor:
    """The image with its P×P patches moved to other places of the grid."""
    B, C, H, W = images.shape
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C, p, p)
    x = x[:, perm].reshape(B, h, w, C, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("key", KEYS)
def test_only_none_is_invariant_to_permuting_the_patch_grid(key, pool):
    model = tiny(key, pool=pool)
    # large random weights: attention at init is nearly uniform, which would hide positions
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    images = torch.randn(2, 3, 16, 16)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        change = (model(images) - model(shuffle_patches(images, 4, perm))).abs().max().item()
    if key == "none":
        assert change < 1e-5
    else:
        assert change > 1e-2


def pair_logits(key: str, grid=(4, 4), layer: int = 0, **options):
    """Logits of one attention layer (positions of block `layer`) when every token has the same
    content, so that only positions can tell pairs apart: (H, N, N) with the class token first."""
    pos = tiny(key, **options).pos_embed
    for p in pos.parameters():  # larger tables than at init, far above float noise
        nn.init.normal_(p, std=1.0)
    torch.manual_seed(2)
    attn = Attention(32, num_heads=2)
    x = torch.randn(1, 1, 32).expand(1, 1 + grid[0] * grid[1], 32)
    return attn.attention_logits(x, pos.attention(grid, layer))[0]


@pytest.mark.parametrize("key,offsets", [("relative", "2d"), ("relative", "1d"),
                                         ("relative_bias", "2d"), ("rope_2d", None)])
def test_relative_logits_depend_only_on_the_offset(key, offsets):
    options = {"offsets": offsets} if offsets else {}
    grid = (4, 5)  # not square, so that rows and columns cannot be confused
    logits = pair_logits(key, grid, **options)[:, 1:, 1:]  # patch pairs
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    if offsets == "1d":
        i = torch.arange(20)
        offset = (i[:, None] - i[None]).flatten().tolist()
    else:
        offset = list(zip((ys[:, None] - ys[None]).flatten().tolist(),
                          (xs[:, None] - xs[None]).flatten().tolist(), strict=True))
    by_offset: dict = {}
    for o, value in zip(offset, logits.flatten(1).T, strict=True):
        by_offset.setdefault(o, []).append(value)
    for o, values in by_offset.items():  # same offset at different places: same logits
        torch.testing.assert_close(torch.stack(values), values[0].expand(len(values), -1),
                                   atol=1e-5, rtol=0, msg=f"offset {o}")
    distinct = torch.stack([v[0] for v in by_offset.values()])
    assert torch.cdist(distinct, distinct).sum() > 1  # ... and other offsets differ
    if offsets == "2d" and key != "rope_2d":  # (1, 2) and (2, 1) are different offsets
        assert not torch.allclose(by_offset[(1, 2)][0], by_offset[(2, 1)][0])


@pytest.mark.parametrize("key", ["relative", "relative_bias"])
def test_the_class_token_has_no_offset_in_relative_tables(key):
    logits = pair_logits(key)
    # identical content: the class token's logits with every patch are the same
    torch.testing.assert_close(logits[:, 0, 1:], logits[:, 0, 1:2].expand(-1, 16))
    torch.testing.assert_close(logits[:, 1:, 0], logits[:, 1:2, 0].expand(-1, 16))


def shaw_logits_by_loops(q, k, table, cls, grid, offsets):
    """The paper's relative attention entry by entry: logit_ij = q_i·(k_j + a_ij) / sqrt(d), with
    a_ij the learned embedding of the offset of patch i from patch j (query minus key), and for
    the class token (index 0) the class->patch, patch->class, class->class entries of `cls`
    (zero when None). q, k: (H, N, d); table: one block's (2h-1, 2w-1, d) or (2hw-1, 1, d)."""
    heads, n, d = q.shape
    h, w = grid

    def a(i, j):
        if i == 0 or j == 0:
            entry = 2 if i == j else 0 if i == 0 else 1
            return torch.zeros(d) if cls is None else cls[entry]
        pi, pj = i - 1, j - 1  # patches in raster order
        if offsets == "1d":
            return table[pi - pj + h * w - 1, 0]
        return table[pi // w - pj // w + h - 1, pi % w - pj % w + w - 1]

    logits = torch.empty(heads, n, n)
    for head in range(heads):
        for i in range(n):
            for j in range(n):
                logits[head, i, j] = q[head, i] @ (k[head, j] + a(i, j)) / d**0.5
    return logits


@pytest.mark.parametrize("shared,cls_entries,offsets", [
    (False, False, "2d"), (False, True, "2d"), (True, True, "2d"), (False, False, "1d")])
def test_relative_is_shaws_formula_with_each_blocks_table(shared, cls_entries, offsets):
    """Every block's logits and fused output against loops over heads, queries and keys."""
    torch.manual_seed(0)
    grid = (2, 3)  # not square: rows and columns cannot be confused
    model = VisionTransformer(img_size=(8, 12), patch_size=4, in_chans=3, num_classes=5,
                              embed_dim=16, depth=2, num_heads=2, pos_embed=factory(
                                  "relative", shared=shared, cls_entries=cls_entries,
                                  offsets=offsets)).eval()
    pos = model.pos_embed
    for p in pos.parameters():  # tables as large as the content terms
        nn.init.normal_(p, std=1.0)
    x = torch.randn(1, 7, 16)
    for layer, block in enumerate(model.blocks):
        table = 0 if shared else layer
        cls = pos.cls[table] if cls_entries else None
        q, k, v = block.attn.qkv(x).reshape(7, 3, 2, 8).permute(1, 2, 0, 3)  # each (H, N, d)
        expected = shaw_logits_by_loops(q, k, pos.weight[table], cls, grid, offsets)
        position = pos.attention(grid, layer)
        torch.testing.assert_close(block.attn.attention_logits(x, position)[0], expected)
        out = (expected.softmax(-1) @ v).transpose(0, 1).reshape(1, 7, 16)
        torch.testing.assert_close(block.attn(x, position), block.attn.proj(out))
    # one attention given block 0's and block 1's positions: other tables, unless shared
    attn = model.blocks[0].attn
    by_layer = [attn.attention_logits(x, pos.attention(grid, layer)) for layer in (0, 1)]
    assert torch.allclose(*by_layer) == shared
CHANNELS = {"relative": 16, "relative_bias": 2}  # head_dim (32 / 2 heads) | heads


@pytest.mark.parametrize("cls_entries", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("key", ["relative", "relative_bias"])
def test_relative_tables_are_per_block_unless_shared(key, shared, cls_entries):
    model = tiny(key, shared=shared, cls_entries=cls_entries)  # depth 2, 4x4 grid
    tables = 1 if shared else 2
    count = sum(p.numel() for p in model.pos_embed.parameters())
    assert count == tables * (7 * 7 + 3 * cls_entries) * CHANNELS[key]  # 2h-1 = 2w-1 = 7
    # every block's table is used: a loss on all tokens reaches each of them
    model.forward_features(torch.randn(2, 3, 16, 16)).square().sum().backward()
    for p in model.pos_embed.parameters():
        assert all(g.abs().sum() > 0 for g in p.grad)
    # one attention given block 0's and block 1's positions: the same only when shared
    assert torch.allclose(pair_logits(key, layer=0, shared=shared, cls_entries=cls_entries),
                          pair_logits(key, layer=1, shared=shared, cls_entries=cls_entries)
                          ) == shared


@pytest.mark.parametrize("key", ["relative", "relative_bias"])
def test_class_token_entries_are_learned_only_when_enabled(key):
    off = tiny(key).pos_embed
    assert off.cls is None and "cls" not in off.state_dict()
    # without entries the class token's row and column carry no position: content only
    torch.manual_seed(3)
    attn, x = Attention(32, num_heads=2), torch.randn(1, 17, 32)
    with_pos, content = attn.attention_logits(x, off.attention((4, 4), 1)), attn.attention_logits(x)
    torch.testing.assert_close(with_pos[..., 0, :], content[..., 0, :])
    torch.testing.assert_close(with_pos[..., :, 0], content[..., :, 0])
    assert not torch.allclose(with_pos[..., 1:, 1:], content[..., 1:, 1:])

    model = tiny(key, cls_entries=True)
    for p in model.parameters():  # large weights: attention at init is nearly uniform
        nn.init.normal_(p, std=0.5)
    images = torch.randn(2, 3, 16, 16)
    learned = model.attention_maps(images)
    model(images).sum().backward()
    assert model.pos_embed.cls.grad.abs().sum() > 0
    with torch.no_grad():
        model.pos_embed.cls.zero_()
    zeroed = model.attention_maps(images)
    # block 0 sees the same tokens: only the class token's attention changed (its row, and the
    # patches' weight on it), patch to patch keeps its ratios
    assert (learned[0][:, :, 0] - zeroed[0][:, :, 0]).abs().max() > 1e-2
    ratios = [m[0][:, :, 1:, 1:] / m[0][:, :, 1:, 1:].sum(-1, keepdim=True)
              for m in (learned, zeroed)]
    torch.testing.assert_close(*ratios)


def test_relative_bias_class_entries_are_one_scalar_per_head_as_beit():
    pos = tiny("relative_bias", cls_entries=True).pos_embed
    bias = pos.attention((4, 4), 1)(None, None)[2]  # (H, N, N)
    cls = pos.cls[1]  # block 1: class to patch, patch to class, class to class
    torch.testing.assert_close(bias[:, 0, 1:], cls[0][:, None].expand(2, 16))
    torch.testing.assert_close(bias[:, 1:, 0], cls[1][:, None].expand(2, 16))
    torch.testing.assert_close(bias[:, 0, 0], cls[2])


def test_class_token_entries_need_a_class_token():
    with pytest.raises(ValueError, match="cls_entries"):
        tiny("relative_bias", pool="mean", cls_entries=True)


@pytest.mark.parametrize("key", ["relative", "relative_bias"])
def test_relative_options_come_from_the_config(key):
    defaults = build_model(compose_config([f"model/pos_embed={key}"]).model).pos_embed
    assert defaults.weight.shape[0] == 4 and defaults.cls is None  # vit_micro: depth 4
    cfg = compose_config([f"model/pos_embed={key}", "model.pos_embed.shared=true",
                          "model.pos_embed.cls_entries=true"])
    validate(cfg)
    options = build_model(cfg.model).pos_embed
    assert options.weight.shape[0] == 1 and options.cls.shape[:2] == (1, 3)


@pytest.mark.parametrize("cls_entries", [False, True])
def test_flop_count_of_shaw_keys_matches_the_unfused_path(cls_entries):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vitlab.flops import forward_flops, vit_macs

    model = tiny("relative", cls_entries=cls_entries)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.randn(1, 3, 16, 16))
    assert forward_flops(model) == counter.get_total_flops()
    tokens = 17 if cls_entries else 16  # zero class-token entries are not multiplied
    assert vit_macs(model)["attn_rel"] == 2 * tokens**2 * 32


def test_sincos_2d_is_a_fixed_buffer_equal_to_the_mae_table():
    from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

    pos = tiny("sincos_2d").pos_embed
    assert not list(pos.parameters()) and "pos" not in pos.state_dict()
    # timm's layout with interleaving is [sin y, cos y, sin x, cos x]; MAE's puts x first
    y_first = build_sincos2d_pos_embed([4, 6], 32, interleave_sin_cos=True)
    torch.testing.assert_close(sincos_2d_table((4, 6), 32), y_first.roll(16, dims=1))


@pytest.mark.parametrize("key", ABSOLUTE)
def test_where_places_absolute_tables(key):
    stem, every, shared = (tiny(key, where=w)
                           for w in ("stem", "every_layer", "every_layer_shared"))
    count = [sum(p.numel() for p in m.pos_embed.parameters()) for m in (stem, every, shared)]
    assert count == [count[0], 2 * count[0], count[0]]  # depth 2: a table per block
    shared.load_state_dict(stem.state_dict())  # same table, added once more before block 1
    images = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(shared(images), stem(images))


@pytest.mark.parametrize("where", ["every_layer", "every_layer_shared"])
@pytest.mark.parametrize("key", ABSOLUTE)
def test_a_late_class_token_goes_without_a_position_through_per_block_tables(key, where):
    """class_token_at=1 with a table before every block: from block 1 on the tokens hold the
    class token, which the patch-only table leaves as it is; the patches get their rows."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32,
                              depth=3, num_heads=2, class_token_at=1,
                              pos_embed=factory(key, where=where)).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    x = torch.randn(2, 17, 32)  # block 2's input: class token + 16 patches
    out, _ = model.positioned(x, (4, 4), 2)
    table = model.pos_embed.table((4, 4), 2 if where == "every_layer" else 0)
    assert table.shape[0] == 16
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1:], x[:, 1:] + table)


@pytest.mark.parametrize("key", ["none", *RELATIVE])
def test_variants_without_a_table_refuse_another_where(key):
    with pytest.raises(ValueError, match="where"):
        tiny(key, where="every_layer")


@pytest.mark.parametrize("key,options", [(k, {}) for k in KEYS] + [
    ("relative", {"shared": True, "cls_entries": True}), ("relative", {"offsets": "1d"}),
    ("relative_bias", {"cls_entries": True})])
def test_a_checkpoint_loads_and_evaluates_at_another_resolution(key, options):
    small, large = tiny(key, img=16, **options), tiny(key, img=32, seed=1, **options)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert small(torch.randn(2, 3, 24, 24)).isfinite().all()  # built at 16, run at 24
        expected = small(images)  # tables resampled in forward
        large.load_state_dict(small.state_dict())  # ... and on load: the same network
        torch.testing.assert_close(large(images), expected, atol=1e-5, rtol=1e-5)
    if key in LEARNED or key.startswith("relative"):  # the tables really changed size
        shapes = [(a.shape, b.shape) for a, b in zip(small.pos_embed.parameters(),
                                                     large.pos_embed.parameters(), strict=True)]
        assert any(a != b for a, b in shapes)


def test_shared_and_per_block_tables_do_not_load_into_each_other():
    with pytest.raises(RuntimeError, match="size mismatch"):
        tiny("relative_bias").load_state_dict(tiny("relative_bias", img=32, shared=True)
                                              .state_dict())


@pytest.mark.parametrize("key", KEYS)
def test_every_variant_composes_validates_and_builds(key):
    cfg = compose_config([f"model/pos_embed={key}", "data.img_size=16", "model.patch_size=4",
                          "model.embed_dim=32", "model.depth=1", "model.num_heads=2"])
    validate(cfg)
    model = build_model(cfg.model)
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_where_is_only_for_absolute_variants_in_the_config():
    cfg = compose_config(["model/pos_embed=rope_2d", "model.pos_embed.where=every_layer"])
    with pytest.raises(ConfigError, match=r"model\.pos_embed\.where"):
        validate(cfg)
    validate(compose_config(["model/pos_embed=learned_2d", "model.pos_embed.where=every_layer"]))


@pytest.mark.parametrize("key", LEARNED)
def test_position_similarity_of_learned_tables(key):
    model = tiny(key)
    sim = position_similarity(model)
    assert sim.shape == (16, 4, 4)
    torch.testing.assert_close(sim.reshape(16, 16).diagonal(), torch.ones(16))
    assert sim.max() <= 1 + 1e-6 and sim.min() >= -1 - 1e-6


def test_similarity_callback_saves_a_png_and_logs_it(tmp_path):
    wandb = create_autospec(WandbLogger, instance=True)
    tensorboard = create_autospec(TensorBoardLogger, instance=True)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), is_global_zero=True, global_step=3,
                              loggers=[wandb, tensorboard])
    PositionSimilarity().on_train_end(trainer, SimpleNamespace(model=tiny("learned_2d")))
    png = tmp_path / "pos_similarity.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    wandb.log_image.assert_called_once_with(key="pos_embed/similarity", images=[str(png)],
                                            step=3)
    tensorboard.experiment.add_figure.assert_called_once()

    png.unlink()  # nothing for a variant without a learned table
    for key in ("sincos_2d", "relative"):
        PositionSimilarity().on_train_end(trainer, SimpleNamespace(model=tiny(key)))
    assert not png.exists()


@pytest.mark.parametrize("key", [k if k in ("relative", "learned_2d") else
                                 pytest.param(k, marks=pytest.mark.slow) for k in KEYS])
def test_every_variant_trains_through_the_cli(key, tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", [f"model/pos_embed={key}", "debug=fast",
                                    f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / "pos_similarity.png").exists() == (key in LEARNED)


def compose_sweep(experiment: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)


@pytest.mark.parametrize("experiment,variants,wheres", [
    ("posemb_ablation", KEYS, None),
    ("posemb_where", ABSOLUTE, ["stem", "every_layer", "every_layer_shared"]),
])
def test_posemb_experiments_sweep_the_variants_over_three_seeds(experiment, variants, wheres):
    cfg = compose_sweep(experiment)
    params = cfg.hydra.sweeper.params
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert params["model/pos_embed"].split(",") == variants
    assert len(params.seed.split(",")) == 3
    assert params.get("model.pos_embed.where", "").split(",") == (wheres or [""])


def test_posemb_ablation_tags_runs_by_variant():
    tags = OmegaConf.to_container(compose_sweep("posemb_ablation"))["tags"]
    assert tags == ["posemb_ablation", "${hydra:runtime.choices.model/pos_embed}"]
