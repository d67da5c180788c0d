"""model=rnn, the lecture's recurrent network over the ViT's patch tokens: its parameters are the
formula's, its output depends on the order of the patches (a position-free ViT's does not), it
trains through the same study, exports to ONNX and is refused by timm in one line."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from exportable import make_run

from vitlab.errors import ConfigError
from vitlab.models import VisionTransformer, patchify
from vitlab.models.pos_embed import NoPosition
from vitlab.models.rnn import RNN
from vitlab.runs.build_model import build_model
from vitlab.runs.export import export
from vitlab.runs.export.onnx import check_onnx
from vitlab.runs.trained import load_trained
from vitlab.training.config_checks import validate


def count(model):
    return sum(p.numel() for p in model.parameters())


def rnn_params(d_in, d_h, layers, gates, directions=1):
    """PyTorch's GRU (3 gates) / LSTM (4): per layer and direction gates (d_in d_h + d_h^2 + 2 d_h)
    (two bias vectors); a later layer reads both directions' outputs."""
    total = 0
    for i in range(layers):
        d = d_in if i == 0 else d_h * directions
        total += directions * gates * (d * d_h + d_h * d_h + 2 * d_h)
    return total


@pytest.mark.parametrize("cell, gates", [("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameters_are_the_formulas(cell, gates, bidirectional):
    model = RNN(16, patch_size=4, in_chans=3, num_classes=5, embed_dim=12, cell=cell, hidden=10,
                num_layers=3, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    embed = 4 * 4 * 3 * 12 + 12
    head = 10 * directions * 5 + 5
    assert count(model) == embed + rnn_params(12, 10, 3, gates, directions) + head
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_preset_is_within_ten_percent_of_vit_micro():
    cfg = compose_config(["model=rnn", "data=fake", "data.in_chans=1"])  # the digits: 32 px grey, 10 classes
    validate(cfg)
    model = build_model(cfg.model)
    assert count(model) == 64 * 128 + 128 + rnn_params(128, 224, 2, 3) + 224 * 10 + 10 == 550_858
    assert abs(count(model) / 542_090 - 1) < 0.10  # vit_micro on the digits


def shuffled(images, patch, order):
    """The image with its patches moved to `order` (raster indices): the same tokens, reordered."""
    B, C, H, W = images.shape
    h, w = H // patch, W // patch
    cells = patchify(images, patch)[:, order].reshape(B, h, w, C, patch, patch)
    return cells.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_unidirectional_rnns_output_depends_on_the_patch_order(cell):
    torch.manual_seed(0)
    model = RNN(16, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, cell=cell, hidden=8).eval()
    x = torch.randn(2, 1, 16, 16)
    order = torch.randperm(16)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(shuffled(x, 4, order)), atol=1e-3)
        # the shuffle moves whole patches: the identity order is the image itself
        torch.testing.assert_close(model(shuffled(x, 4, torch.arange(16))), model(x))


def test_a_position_free_vits_output_does_not():
    torch.manual_seed(0)
    model = VisionTransformer(16, 4, 1, 3, embed_dim=16, depth=2, num_heads=2, pool="mean",
                              pos_embed=NoPosition).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(shuffled(x, 4, torch.randperm(16))), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool, bidirectional", [("mean", False), ("last", True)])
def test_pools_read_the_documented_states(pool, bidirectional):
    torch.manual_seed(0)
    model = RNN(8, patch_size=4, in_chans=1, num_classes=2, embed_dim=4, hidden=3, num_layers=1,
                pool=pool, bidirectional=bidirectional).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out, h = model.layers[0](model.embed(x)[0])
        want = out.mean(1) if pool == "mean" else torch.cat([h[0], h[1]], dim=-1)  # final states
        torch.testing.assert_close(model.forward_features(x), want)


def test_the_study_rnn_replaces_the_vit_and_bad_values_are_refused_in_one_line(compose_cfg):
    cfg = compose_config(["experiment=inductive_bias", "bias=rnn"])
    assert cfg.model._target_ == "vitlab.models.rnn.RNN"
    assert build_model(cfg.model)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    for overrides, message in [(["model.cell=rnn"], "model.cell='rnn' is not one of gru, lstm"),
                               (["model.pool=cls"], "model.pool='cls' is not one of last, mean"),
                               (["model.hidden=0"], "model.hidden=0 is outside [1, inf]"),
                               (["+model.pretrained=/x/run"], "model.pretrained starts a ViT")]:
        with pytest.raises(ConfigError) as error:
            validate(compose_cfg(["model=rnn", *overrides]))
        assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_onnx_runs_the_rnn_and_timm_refuses_it_in_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    run = make_run(tmp_path / "run", ["model=rnn"])
    path = export(run, "onnx", tmp_path / "onnx")
    assert check_onnx(load_trained(run), path) < 1e-4
    with pytest.raises(ConfigError) as error:
        export(run, "timm", tmp_path / "timm")
    assert str(error.value).endswith(
        "vitlab.models.rnn.RNN: timm has no such classifier (export --to onnx works)")
    assert "\n" not in str(error.value)


def test_flops_count_every_recurrent_weight_once_per_step():
    from vitlab.flops import matmul_macs
    model = RNN(8, patch_size=4, in_chans=1, num_classes=2, embed_dim=4, hidden=3, num_layers=1)
    embed, steps = 4 * 4 * (4 * 4), 4  # 4 tokens of 4 channels, each from a 4x4 patch
    assert matmul_macs(model) == embed + steps * (3 * 3 * 4 + 3 * 3 * 3) + 3 * 2
