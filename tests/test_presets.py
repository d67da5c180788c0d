"""Model presets are deltas over a shared base (conf/model/base/vit.yaml): the configs they compose must
stay exactly those the copies composed. The golden file was captured from the copies; regenerate it
only on purpose: `PYTHONPATH=src:tests python -c "import test_presets as t; t.write_golden()"`."""

import json

import pytest
import yaml
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

GOLDEN = CONF.parent / "tests" / "golden" / "presets.json"


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cases() -> list[str]:
    """Every model preset by its own name, every experiment and every bias (conf/bias/)."""
    return ([f"model={m}" for m in presets("model")] + [f"experiment={e}" for e in presets("experiment")]
            + [f"+bias={b}" for b in presets("bias")])


def missing(node, prefix: str = ""):
    """The dotted keys of every ??? value (OmegaConf.missing_keys resolves, and fails on them)."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from missing(value, f"{prefix}{key}.")
        elif value == "???":
            yield f"{prefix}{key}"


def composed(override: str, conf=CONF) -> dict:
    """The model as it resolves, keys in order, and the epochs a preset's recipe may set: what a
    preset decides, and nothing the other groups (module, trainer, data) hold. The output dir is
    fixed and Hydra's own settings (the time in its run dir) are left out."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.choices.model}
    with open_dict(cfg):
        del cfg.hydra  # Hydra's own settings, with the time in its run dir
        cfg.paths.output_dir = "OUT"
    whole = OmegaConf.to_container(cfg, resolve=False)
    for key in missing(whole):  # a value the user must give (???): named, not resolved
        OmegaConf.update(cfg, key, "MISSING")
    return {"model": OmegaConf.to_yaml(cfg.model, resolve=True), "max_epochs": cfg.trainer.max_epochs}


def write_golden(conf=CONF):
    """From `conf`: a checkout's conf/ (the golden was written from main's before the presets
    became deltas)."""
    GOLDEN.write_text(json.dumps({c: composed(c, conf) for c in cases()}, indent=1) + "\n")


# Composed from a module group (model/embed, model/attention) that comes after the base, these presets
# place that key after the base's keys, not before them: the same values, the keys in another order.
REORDERED = {"model=cct_7_3x1", "model=convit_tiny", "model=sl_vit", "experiment=cifar10_cct"}


@pytest.mark.parametrize("override", cases())
def test_every_preset_composes_as_the_golden_copy(override):
    golden = json.loads(GOLDEN.read_text())
    assert override in golden, f"{override} is new: regenerate tests/golden/presets.json on purpose"
    now = composed(override)
    if override in REORDERED:
        assert now != golden[override]  # else it belongs with the byte-identical ones
        assert now["max_epochs"] == golden[override]["max_epochs"]
        assert yaml.safe_load(now["model"]) == yaml.safe_load(golden[override]["model"])
    else:
        assert now == golden[override]


def test_the_golden_copy_covers_every_preset():
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(cases())
