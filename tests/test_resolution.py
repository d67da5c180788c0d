"""probes.resolution: the trained model at other image sizes, its positions adapted as each
variant adapts them when a checkpoint is loaded at that size (one rule, not a second copy);
`none` and `sincos_2d` have nothing to adapt, a learned table is itself at the training size;
the CNN and RNN run at any size, the MLP is recorded as skipped with its reason; the posemb
ablation's report draws one curve per variant."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import compose_config
from omegaconf import OmegaConf

from vitlab.analysis.probes import resize, resolution_accuracy
from vitlab.analysis.probes.run import run_probes
from vitlab.models.mlp import MLP
from vitlab.models.pos_embed.base import resample_grid_table
from vitlab.models.rnn import RNN
from vitlab.runs.build_model import build_model
from vitlab.runs.report import write_report

VARIANTS = ["none", "learned_1d", "learned_2d", "relative", "relative_bias", "sincos_2d", "rope_2d"]


def vit(variant, size, *overrides):
    cfg = compose_config(["data=fake", "data.in_chans=1", f"data.img_size={size}",
                          f"model/pos_embed={variant}", *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


@pytest.mark.parametrize("variant", ["none", "sincos_2d"])
def test_none_and_sincos_need_no_adaptation(variant):
    small, large = vit(variant, 32), vit(variant, 48)
    state = small.state_dict()
    large.load_state_dict(state)  # strict: the same keys and shapes at any size
    assert {k: v.shape for k, v in large.state_dict().items()} == {k: v.shape for k, v in state.items()}
    assert all(torch.equal(large.state_dict()[k], v) for k, v in state.items())  # no tensor changed


@pytest.mark.parametrize("variant", ["learned_1d", "learned_2d", "relative", "relative_bias"])
def test_a_learned_table_interpolates_to_exactly_itself_at_the_training_size(variant):
    model = vit(variant, 32)
    pos = model.pos_embed
    for name, table in pos.named_parameters(recurse=False):
        assert torch.equal(pos.resample_loaded(name, table.detach().clone()), table)  # on load
    if variant == "learned_1d":  # in forward, at the training grid: the table as trained
        assert torch.equal(pos.table(pos.grid, 0), pos.weight[0])
    if variant == "learned_2d":
        h, w = pos.grid
        rows, cols = pos.row[0][:, None].expand(h, w, -1), pos.col[0][None].expand(h, w, -1)
        assert torch.equal(pos.table(pos.grid, 0)[1:], torch.cat([rows, cols], -1).flatten(0, 1))
    t = torch.randn(16, 5)  # and the rule itself, bicubic, at the same size
    assert torch.equal(resample_grid_table(t, (4, 4), (4, 4)), t)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_probe_at_another_size_is_the_checkpoint_loaded_at_that_size(variant):
    """The one path: the trained model fed 48 px images gives the logits of the same weights
    loaded (load_state_dict resampling its tables) into the model built for 48 px."""
    small, large = vit(variant, 32), vit(variant, 48)
    with torch.no_grad():
        for p in small.parameters():  # weights far from their init, so tables matter
            p.add_(torch.randn_like(p) * 0.1)
    large.load_state_dict(small.state_dict())
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(x), large(x), atol=1e-5, rtol=1e-4)


def probes(sizes):
    return OmegaConf.create({"resolution": sizes, "shift": [], "shuffle": [], "occlusion": [], "cka": False})


def batches(n=4, size=32):
    torch.manual_seed(0)
    return [(torch.randn(n, 1, size, size), torch.randint(0, 3, (n,)))]


def test_the_probe_runs_the_cnn_and_rnn_at_any_size_and_records_the_mlp_as_skipped():
    from vitlab.models.cnn import cnn
    sizes = [24, 40, 48]
    for model in (cnn("resnet10t", img_size=32, in_chans=1, num_classes=3),
                  RNN(32, patch_size=8, in_chans=1, num_classes=3, embed_dim=8, hidden=8)):
        out = run_probes(model, batches(), probes(sizes))
        assert list(out["resolution"]) == ["24", "32", "40", "48"] and "skipped" not in out
    out = run_probes(MLP(32, 1, 3, hidden_dims=(8,)), batches(), probes(sizes))
    assert "resolution" not in out
    why = "ValueError: MLP takes 32x32 images only (a weight per input pixel)"
    assert out["skipped"] == {"resolution": why}


def test_the_probe_resizes_and_is_off_by_default():
    x = torch.rand(2, 1, 32, 32)
    assert resize(x, 32) is x and resize(x, 48).shape == (2, 1, 48, 48)
    assert torch.allclose(resize(torch.ones(1, 1, 32, 32), 24), torch.ones(1, 1, 24, 24))
    assert list(compose_config([]).probes.resolution) == []
    posemb = compose_config(["experiment=posemb_ablation"])
    assert list(posemb.probes.resolution) == [24, 40, 48]
    model = vit("none", 32, "model.pool=mean")
    acc = resolution_accuracy(model, batches(), [24])
    assert set(acc) == {24, 32}
    with pytest.raises(ValueError, match=r"sizes \[36\] are not whole numbers of the model's 8 px patches"):
        resolution_accuracy(model, batches(), [24, 36])


def test_the_posemb_report_draws_accuracy_against_resolution_per_variant(tmp_path):
    for num, (pos, drop) in enumerate([("none", 0.0), ("learned_1d", 0.2), ("sincos_2d", 0.1)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model/pos_embed={pos}"]))
        (job / "summary.json").write_text(json.dumps({
            "status": "completed", "test": {"test/acc": 0.9}, "parameters": 1, "wall_time_s": 1.0,
            "probes": {"resolution": {"24": 0.9 - drop, "32": 0.9, "48": 0.9 - 2 * drop}}}))
    report = write_report(tmp_path).read_text()
    assert "## Accuracy vs resolution (bias probe, mean over seeds)" in report
    assert "| learned_1d | 0.700 | 0.900 | 0.500 |" in report and "| none | 0.900 | 0.900 | 0.900 |" in report
    assert (tmp_path / "probe_resolution.png").stat().st_size > 5000
