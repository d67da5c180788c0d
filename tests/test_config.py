"""Every config group is validated before any data is loaded: one line naming the key."""

import pytest
from omegaconf import open_dict

from vitlab.errors import ConfigError
from vitlab.training.config_checks import validate

BAD = [
    # (overrides, expected start of the message)
    (["model.patch_size=5"], "model.patch_size=5 does not divide data.img_size=32"),
    (["model.patch_size=0"], "model.patch_size=0 is outside [1, inf]"),
    (["model.num_heads=3"], "model.num_heads=3 does not divide model.embed_dim=128"),
    (["model.embed_dim=-8"], "model.embed_dim=-8 is outside [1, inf]"),
    (["model.depth=2.5"], "model.depth=2.5 must be an integer"),
    (["model.mlp_ratio=0"], "model.mlp_ratio=0 is outside (0, inf]"),
    (["model.drop_rate=1.0"], "model.drop_rate=1.0 is outside [0, 1)"),
    (["model.attn_drop_rate=-0.1"], "model.attn_drop_rate=-0.1 is outside [0, 1)"),
    (["model.drop_path_rate=1.5"], "model.drop_path_rate=1.5 is outside [0, 1)"),
    (["model.pool=max"], "model.pool='max' is not one of cls, mean"),
    (["model.pos_embed.where=everywhere"], "model.pos_embed.where='everywhere' is not one of"),
    (["model/pos_embed=rope_2d", "model.pos_embed.where=every_layer"],
     "model.pos_embed.where='every_layer' needs an absolute variant"),
    (["model/pos_embed=relative_bias", "model.pos_embed.where=every_layer_shared"],
     "model.pos_embed.where='every_layer_shared' needs an absolute variant"),
    (["data.num_classes=1"], "data.num_classes=1 is outside [2, inf]"),
    (["data.batch_size=0"], "data.batch_size=0 is outside [1, inf]"),
    (["data.batch_size=abc"], "data.batch_size='abc' must be an integer"),
    (["data.train_fraction=0"], "data.train_fraction=0 is outside (0, 1]"),
    (["data.train_fraction=1.5"], "data.train_fraction=1.5 is outside (0, 1]"),
    (["data.val_fraction=1.0"], "data.val_fraction=1.0 is outside (0, 1)"),
    (["data.samples_per_class=0"], "data.samples_per_class=0 is outside [1, inf]"),
    (["data.img_size=0"], "data.img_size=0 is outside [1, inf]"),
    (["module.optimizer.lr=-1e-3"], "module.optimizer.lr=-0.001 is outside (0, inf]"),
    (["module.optimizer.lr=0"], "module.optimizer.lr=0 is outside (0, inf]"),
    (["module.weight_decay=-0.1"], "module.weight_decay=-0.1 is outside [0, inf]"),
    (["module.label_smoothing=1"], "module.label_smoothing=1 is outside [0, 1)"),
    (["module.warmup_epochs=-1"], "module.warmup_epochs=-1 is outside [0, inf]"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is outside [1, inf]"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is outside [0, inf]"),
    (["data=imagefolder", "data.num_classes=10"], "data.data_dir must be set"),
    (["data=imagefolder", "data.data_dir=x"], "data.num_classes must be set"),  # via data.mix too
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_is_rejected_naming_the_key(compose_cfg, overrides, message):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", [
    [],
    ["model=vit_lite", "data=cifar10"],
    ["model/pos_embed=learned_1d", "model.pos_embed.where=every_layer_shared"],
    ["model/pos_embed=sincos_2d", "model.pos_embed.where=every_layer"],
    ["model.pool=mean", "data.train_fraction=1.0", "trainer.max_epochs=-1"],
])
def test_good_configs_pass(compose_cfg, overrides):
    validate(compose_cfg(overrides))


def test_missing_key_is_named(compose_cfg):
    cfg = compose_cfg()
    with open_dict(cfg):
        cfg.model.embed_dim = "???"
    with pytest.raises(ConfigError, match=r"^model.embed_dim must be set"):
        validate(cfg)


OWN_RULES = [  # (overrides, the model's arguments breaking the same rule)
    (["model.num_heads=3"], dict(embed_dim=128, num_heads=3)),
    (["model.pool=max"], dict(pool="max")),
    (["model.distill_token=true", "model.pool=mean"], dict(pool="mean", distill_token=True)),
    (["model.pos_embed.where=everywhere"], dict(where="everywhere")),
    (["model/pos_embed=rope_2d", "model.pos_embed.where=every_layer"], dict(where="every_layer")),
]


@pytest.mark.parametrize("overrides, arguments", OWN_RULES, ids=[" ".join(o) for o, _ in OWN_RULES])
def test_the_checks_and_the_model_state_a_rule_in_the_same_words(compose_cfg, overrides, arguments):
    """The rule lives beside the model class; the config check calls it before anything is built,
    naming the config keys, and the constructor raises the same words naming its arguments."""
    from hydra.utils import instantiate

    from vitlab.runs.build_model import build_model

    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as checked:
        validate(cfg)
    with open_dict(cfg):
        cfg.model.depth = 1
    with pytest.raises(Exception) as built:  # noqa: PT011 - hydra wraps the ValueError
        build_model(cfg.model) if "where" not in arguments else instantiate(cfg.model.pos_embed)(
            embed_dim=128, grid=(4, 4), num_prefix=1, depth=1, num_heads=4)
    raised = built.value.__cause__ or built.value
    assert isinstance(raised, ValueError)
    assert str(raised) == str(checked.value).replace("model.pos_embed.", "").replace("model.", "")


def test_what_kind_of_model_is_asked_of_its_class(compose_cfg):
    from vitlab.model_kind import model_kind

    assert model_kind(compose_cfg(["model=vit_hybrid"]).model) == "vit"
    assert model_kind(compose_cfg(["model=mlp"]).model) == "mlp"
    assert model_kind(compose_cfg(["model=cnn"]).model) == "cnn"
    assert model_kind({"_target_": "vitlab.models.no_such.Model"}) is None
