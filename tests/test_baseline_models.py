"""The lecture's baselines: model=mlp and model=cnn build, count as timm does, and refuse bad input."""

import pytest
import timm
import torch
from conftest import compose_config
from hydra.utils import instantiate

from vitlab.config_checks import check_baseline, check_model
from vitlab.errors import ConfigError
from vitlab.models.cnn import cnn
from vitlab.models.mlp import MLP
from vitlab.optim import freeze, head_names


def test_mlp_preset_parameter_count_and_shape():
    cfg = compose_config(["model=mlp", "data=fake", "data.img_size=32", "data.in_chans=1",
                          "data.num_classes=10"])
    check_model(cfg), check_baseline(cfg)
    model = instantiate(cfg.model)
    assert isinstance(model, MLP)
    assert sum(p.numel() for p in model.parameters()) == 545_290
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_cnn_is_timms_model_with_timms_parameter_count():
    model = cnn("resnet18", img_size=32, in_chans=1, num_classes=10)
    ref = timm.create_model("resnet18", in_chans=1, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert head_names(model) == {"fc.weight", "fc.bias"}


def test_cnn_linear_probe_trains_only_the_classifier_and_keeps_norm_statistics():
    model = cnn("resnet18", img_size=32, in_chans=3, num_classes=10)
    freeze(model, linear_probe=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    before = model.bn1.running_mean.clone()
    model.train()(torch.randn(4, 3, 32, 32))
    assert torch.equal(model.bn1.running_mean, before)


@pytest.mark.parametrize("kw, message", [
    (dict(backbone="resnet_18"), "model.backbone='resnet_18' is not a timm model"),
    (dict(weights="/nonexistent.pth"), "model.weights: no checkpoint file"),
])
def test_cnn_bad_input_is_one_clear_line(kw, message):
    with pytest.raises(ConfigError) as error:
        cnn(**{"backbone": "resnet18", "img_size": 32, "num_classes": 10, **kw})
    assert str(error.value).startswith(message), str(error.value)


def test_baseline_check_refuses_a_bad_width():
    cfg = compose_config(["model=mlp", "data=fake", "model.hidden_dims=[0]"])
    with pytest.raises(ConfigError, match="model.hidden_dims"):
        check_baseline(cfg)
