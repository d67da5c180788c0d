"""The lecture's baselines, model=mlp and model=cnn: built as documented, equal to timm where
they are timm's, refused in one line where a ViT-only option is asked of them, and run through
the same optimiser, FLOP count and study as every ViT."""

import json

import pytest
import timm
import torch
from conftest import compose_config, run_entry
from torch import nn

from vitlab.errors import ConfigError
from vitlab.flops import matmul_macs
from vitlab.models.cnn import cnn
from vitlab.models.mlp import MLP
from vitlab.objectives.optim import freeze, head_names, layer_ids, param_groups_layer_decay
from vitlab.runs.build_model import build_model
from vitlab.training.config_checks import validate


def count(model):
    return sum(p.numel() for p in model.parameters())


def preset(*overrides):
    cfg = compose_config(["data=fake", *overrides])
    validate(cfg)
    return build_model(cfg.model)


def test_mlp_preset_is_flatten_then_two_hidden_layers_with_the_documented_count():
    model = preset("model=mlp", "data.in_chans=1")  # the digits: 32 px grey, 10 classes
    d = 32 * 32
    assert count(model) == (d * 384 + 384) + (384 * 384 + 384) + (384 * 10 + 10) == 545_290
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 10)
    # fully connected: the first layer sees every pixel with its own weight, nothing shared
    torch.testing.assert_close(model.layers[0][0](x.flatten(1)), x.flatten(1) @ model.layers[0][0].weight.T
                               + model.layers[0][0].bias)


def test_mlp_layers_are_groups_for_layer_decay_and_freezing():
    model = MLP(8, 1, 3, hidden_dims=(5, 6, 7))
    ids, n = layer_ids(model)
    assert n == 4  # the first layer (as a ViT's embedding), hidden layers 1 and 2, the head
    assert ids["layers.0.0.weight"] == 0 and ids["layers.2.0.weight"] == 2 and ids["head.weight"] == 3
    scales = {g["lr_scale"] for g in param_groups_layer_decay(model, 0.05, 0.5)}
    assert scales == {0.5 ** k for k in range(4)}
    freeze(model, layers=2)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "layers.2.0.weight", "layers.2.0.bias", "head.weight", "head.bias"]


def test_cnn_preset_is_timms_resnet18_with_the_same_outputs():
    torch.manual_seed(0)
    ours = preset("model=cnn", "data.in_chans=1").eval()
    ref = timm.create_model("resnet18", num_classes=10, in_chans=1).eval()
    assert count(ours) == count(ref) == 11_175_370
    ref.load_state_dict(ours.state_dict())  # same names, same shapes
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(ours(x), ref(x))
    assert head_names(ours) == {"fc.weight", "fc.bias"}


def test_cnn_starts_from_a_local_timm_file_with_a_new_classifier_and_adapted_first_conv(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet10t", num_classes=1000)  # ImageNet's head, RGB
    file = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), file)
    model = cnn("resnet10t", img_size=32, in_chans=1, num_classes=10, weights=str(file))
    sd = source.state_dict()
    torch.testing.assert_close(model.state_dict()["layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"])
    # one grey channel: timm sums the RGB filters of the first convolution
    torch.testing.assert_close(model.state_dict()["conv1.0.weight"],
                               sd["conv1.0.weight"].sum(1, keepdim=True))
    assert model.fc.out_features == 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(backbone="resnet181"), "model.backbone='resnet181' is not a timm model; close names: "),
    (dict(weights="/nowhere/r18.pth"), "model.weights: no checkpoint file at /nowhere/r18.pth"),
    (dict(backbone="convnext_atto", img_size=2),
     "data.img_size=2x2 is too small for model.backbone=convnext"),
])
def test_cnn_refuses_bad_input_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as error:
        cnn(**{"img_size": 32, "num_classes": 10, **kwargs})
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize("overrides, message", [
    (["model=mlp", "model.hidden_dims=[]"], "model.hidden_dims=[]: give one positive integer width"),
    (["model=mlp", "model.hidden_dims=[64,0]"], "model.hidden_dims=[64, 0]: give one positive integer"),
    (["model=mlp", "model.drop_rate=1.0"], "model.drop_rate=1.0 is outside [0, 1)"),
    (["model=cnn", "+model.pretrained=/x/run"], "model.pretrained starts a ViT from a checkpoint; model=cnn"),
    (["model=mlp", "module.stem_lr_scale=0.1"], "module.stem_lr_scale scales a hybrid's CNN stem; model=mlp"),
])
def test_baseline_configs_refuse_vit_only_and_bad_values_in_one_line(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg(overrides))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_freezing_the_cnn_for_a_linear_probe_leaves_the_classifier_and_keeps_bn_statistics():
    model = cnn("resnet10t", img_size=32, in_chans=1, num_classes=10)
    freeze(model, linear_probe=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(4, 1, 32, 32) * 3 + 1)
    torch.testing.assert_close(bn.running_mean, before)  # frozen: statistics do not move


def test_flops_of_the_baselines_count_their_layers():
    mlp = MLP(8, 1, 3, hidden_dims=(5, 7))
    assert matmul_macs(mlp, 8) == 64 * 5 + 5 * 7 + 7 * 3
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    assert matmul_macs(net, 8) == 8 * 8 * 4 * 9 + 256 * 3  # per output pixel: C_out x C_in x k x k


@pytest.mark.parametrize("bias, target", [("mlp", "vitlab.models.mlp.MLP"), ("cnn", "vitlab.models.cnn.cnn")])
def test_the_study_baselines_replace_the_vit(bias, target):
    cfg = compose_config(["experiment=inductive_bias", f"bias={bias}"])
    assert cfg.model._target_ == target
    model = build_model(cfg.model)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn", "rnn"])
def test_baseline_trains_tests_and_writes_its_summary(tmp_path, name):
    result = run_entry("train.py", [f"model={name}", "data=fake", "trainer.max_epochs=1",
                                    "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                                    "+trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
                                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 <= summary["test"]["test/acc"] <= 1
    assert summary["parameters"] == count(preset(f"model={name}"))


def test_the_small_image_cnn_keeps_a_4x4_map_at_32_px_near_the_vits_parameter_count():
    from vitlab.models.cnn import cnn

    small = build_model(compose_config(["model=cnn_small"]).model)
    vit = build_model(compose_config([]).model)
    count = sum(p.numel() for p in small.parameters())
    assert count == 595_434 and abs(count / sum(p.numel() for p in vit.parameters()) - 1) < 0.1
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert small.forward_features(torch.zeros(2, 1, 32, 32)).shape[-2:] == (4, 4)  # resnet18: 1x1
    assert [f["reduction"] for f in small.feature_info][-1] == 8
    with pytest.raises(ConfigError, match="small_image_stem=true needs a timm ResNet"):
        cnn("convnext_atto", img_size=32, in_chans=1, num_classes=10, small_image_stem=True)
