"""Every user-fixable mistake ends in one line naming the key and the fix (exit 2): unknown
presets and keys, unreadable overrides, errors raised while Hydra instantiates a part, a GPU
trainer without a GPU. docs/guides/errors.md lists these messages."""

from __future__ import annotations

import pytest
import torch
from conftest import run_entry
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException

from vitlab.cli import compose_command, split_argv
from vitlab.errors import ConfigError, DataError, user_error
from vitlab.training.config_checks import validate

COMPOSE = [
    (["model=vit_foo"], "model=vit_foo is not one of the model presets: "),  # then every preset
    (["model/pos_embed=relativ"], "model/pos_embed=relativ is not one of the model/pos_embed presets"),
    (["trainer=gpus"], "trainer=gpus is not one of the trainer presets: cpu, ddp, ddp_cpu, default, gpu"),
    (["model.embed_dimm=64"], "model.embed_dimm is not a key of the config; did you mean model.embed_dim?"),
    (["model=vit_hybrid", "model.embed.backbon=resnet18"],
     "model.embed.backbon is not a key of the config; did you mean model.embed.backbone?"),
    (["+model.depth=3"], "+model.depth: model.depth is already in the config; set it without the +"),
    (["seed=[1,2"], "cannot read the override: "),
    (["model.depth"], "cannot read the override: "),
    (["model=vit_micro,vit_foo", "seed=0,1"], "model=vit_foo is not one of the model presets"),  # a sweep
    (["experiment=posemb_abaltion"], "experiment=posemb_abaltion is not one of the experiment presets"),
]


@pytest.mark.parametrize("overrides, message", COMPOSE, ids=[" ".join(o) for o, _ in COMPOSE])
def test_composition_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_command("train", overrides, every=False)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)
    if overrides == ["model=vit_foo"]:
        assert "vit_micro, " in str(error.value) and str(error.value).endswith("(conf/model/)")


def test_good_command_lines_compose_every_job_of_a_sweep():
    assert len(compose_command("train", ["experiment=posemb_ablation"])) == 7  # its own 7 variants
    assert len(compose_command("train", ["model=vit_micro,vit_hybrid", "seed=0,1,2"])) == 2
    assert split_argv(["-m", "--cfg", "job", "seed=1"]) == (["seed=1"], True)
    assert split_argv(["--help"]) is None  # Hydra's own business


def test_a_part_refusing_its_arguments_is_one_line_naming_the_node():
    """Hydra wraps a constructor's error in InstantiationException (four lines with target and
    full_key); the cause is what to show."""
    def wrapped(cause: Exception) -> InstantiationException:
        try:
            try:
                raise cause
            except Exception as e:
                raise InstantiationException("Error in call to target 'lightning.pytorch.trainer."
                                             f"trainer.Trainer':\n{cause!r}\nfull_key: trainer") from e
        except InstantiationException as outer:
            return outer

    error = user_error(wrapped(MisconfigurationException("No supported gpu backend found!")))
    assert str(error).startswith("trainer: No supported gpu backend found! (raised by "
                                 "lightning.pytorch.trainer.trainer.Trainer while building `trainer`")
    assert isinstance(user_error(wrapped(DataError("no folder x"))), DataError)  # ours, as it is
    assert user_error(wrapped(RuntimeError("a bug"))) is None  # a bug keeps its traceback
    assert user_error(KeyError("x")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
@pytest.mark.parametrize("trainer", ["trainer=gpu", "trainer=ddp"])
def test_gpu_trainer_without_a_gpu_says_so_and_names_the_cpu_preset(compose_cfg, trainer):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg([trainer]))
    assert str(error.value) == ("trainer.accelerator=gpu: no CUDA device is visible "
                                "(torch.cuda.is_available() is False); use trainer=cpu, or "
                                "trainer=ddp_cpu for data-parallel CPU processes")


def test_more_gpus_than_visible_is_one_line(compose_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    validate(compose_cfg(["trainer=ddp", "trainer.devices=2"]))
    with pytest.raises(ConfigError, match=r"^trainer.devices=4 asks for 4 GPUs but 2 are visible; "
                                          r"use trainer.devices=2 or fewer$"):
        validate(compose_cfg(["trainer=ddp", "trainer.devices=4", "data.batch_size=64"]))


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=0"], "trainer.devices=0: use a number of devices (>= 1)"),
    (["trainer=ddp_cpu", "trainer.devices=abc"], "trainer.devices='abc': use a number of devices"),
    (["seed=abc"], "seed='abc' must be an integer"),
])
def test_bad_trainer_devices_and_seed_are_one_line(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg(overrides))
    assert str(error.value).startswith(message), str(error.value)


def test_cli_prints_one_line_and_exits_2_for_a_bad_key_and_a_refused_value(tmp_path):
    """Through the real entry point: before Hydra runs (a misspelt key), and while Hydra builds
    the Trainer (a precision Lightning refuses)."""
    for i, (argv, start) in enumerate((
            (["model.embed_dimm=64"], "error: model.embed_dimm is not a key of the config"),
            (["trainer.precision=bf17"], "error: trainer: Precision 'bf17' is invalid."))):
        result = run_entry("train.py", [*argv, f"hydra.run.dir={tmp_path / str(i)}"], cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and lines[-1].startswith(start), result.stderr[-2000:]
        assert "Error executing job" not in result.stderr and "full_key" not in result.stderr
