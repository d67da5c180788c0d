"""A run folder read back builds only what vitlab may build, and secrets are never logged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import CONF, compose_config
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from vitlab.errors import ConfigError
from vitlab.runs.run_folder import check_target, load_model, run_config
from vitlab.training.evaluate import evaluate
from vitlab.training.loggers import REDACTED, log_run_config


def run_folder(tmp_path: Path, config: dict) -> Path:
    (tmp_path / ".hydra").mkdir(parents=True)
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    return tmp_path


def library_targets():
    """Every `_target_` vitlab's own configs name (the hydra/ group is Hydra's, never saved)."""
    for path in sorted(CONF.rglob("*.yaml")):
        if "hydra" not in path.relative_to(CONF).parts:
            yield from ((path.name, t) for t in re.findall(r"_target_:\s*([\w.]+)", path.read_text()))


def test_every_target_vitlabs_configs_name_is_allowed():
    targets = list(library_targets())
    assert len(targets) > 50
    for source, target in targets:
        check_target(target, "x", source)


def test_a_composed_run_config_reads_back(tmp_path):
    cfg = compose_config(["data=streaming", "data.input_dir=/x", "logger=wandb", "data.mix.mixup_alpha=0.8"],
                         output_dir=tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    assert run_config(tmp_path).data._target_ == "vitlab.data.streaming.StreamingDataModule"


@pytest.mark.parametrize("config,named", [
    ({"data": {"_target_": "os.system", "command": "touch pwned"}}, "data._target_=os.system"),
    ({"callbacks": {"x": [{"_target_": "builtins.exec"}]}}, "callbacks.x[0]._target_=builtins.exec"),
    ({"model": {"_target_": "torch.load"}}, "model._target_=torch.load"),
    # an allowed spelling reaching a foreign callable through a module's attributes
    ({"data": {"_target_": "vitlab.runs.run_folder.os.system"}}, "is posix's"),
    ({"data": {"_target_": "vitlab.training.evaluate.instantiate"}}, "reached through an allowed module"),
    ({"data": {"_target_": "${oc.env:T}"}}, "is not a class name"),
    ({"data": {"x": "${oc.create:{_target_: os.system}}"}}, "data.x calls the resolver ${oc.create:...}"),
])
def test_a_foreign_target_is_refused_in_one_line_naming_it(tmp_path, config, named):
    folder = run_folder(tmp_path, config)
    with pytest.raises(ConfigError, match=re.escape(named)) as refused:
        load_model(folder / "checkpoints" / "last.ckpt")
    assert "\n" not in str(refused.value)


def test_a_trusted_package_can_be_allowed(tmp_path, monkeypatch):
    folder = run_folder(tmp_path, {"data": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(ConfigError, match=r"VITLAB_ALLOW_TARGETS=collections\."):
        run_config(folder)
    monkeypatch.setenv("VITLAB_ALLOW_TARGETS", "collections.")
    assert run_config(folder).data._target_ == "collections.OrderedDict"


def test_eval_refuses_a_foreign_target_before_running_it(tmp_path, monkeypatch):
    folder = run_folder(tmp_path / "run", {"data": {"_target_": "os.system", "command": "touch pwned"}})
    monkeypatch.chdir(tmp_path)
    cfg = compose_config([f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"], config_name="eval",
                         output_dir=tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"data\._target_=os\.system is not a vitlab"):
        evaluate(cfg)
    assert not (tmp_path / "pwned").exists()


def test_storage_options_are_logged_as_keys_only(tmp_path):
    cfg = compose_config(["data=streaming", "data.input_dir=s3://bucket/set",
                          "+data.storage_options.key=AKIA-SECRET", "+data.storage_options.secret=s3cr3t"],
                         output_dir=tmp_path)
    logger = CSVLogger(tmp_path, name="csv")
    log_run_config([logger], cfg, parameters=1)
    logger.save()
    logged = Path(logger.log_dir, "hparams.yaml").read_text()
    assert "AKIA-SECRET" not in logged and "s3cr3t" not in logged
    saved = yaml.unsafe_load(logged)["config"]["data"]["storage_options"]
    assert saved == {"key": REDACTED, "secret": REDACTED}
    assert cfg.data.storage_options.key == "AKIA-SECRET"  # the run itself still has them
