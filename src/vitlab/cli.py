"""A command line's overrides, checked before Hydra runs them: every mistake in one line.

Hydra reports an unknown preset, key or malformed override in several lines (and in a sweep
only when it reaches the bad job). `check_command_line` composes the config the way
`python src/train.py ... --cfg job` would — a sweep once per value of each swept key, the
experiment's own sweep lists included — and turns Hydra's errors into one ConfigError naming
the override and the fix. The documentation's commands test composes with the same functions.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p"}  # Hydra flags taking a value
OWN_CONFIG = {"--config-name", "-cn", "--config-dir", "-cd", "--config-path", "-cp",
              "--experimental-rerun", "--help", "-h", "--hydra-help", "--shell-completion", "-sc",
              "--info", "-i"}


def split_argv(argv: list[str]) -> tuple[list[str], bool] | None:
    """(overrides, multirun) of a command line's arguments; None when Hydra is asked for help,
    another config or a rerun (nothing to check here)."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in OWN_CONFIG:
            return None
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in VALUE_FLAGS:
            skip = True
        elif arg.startswith("-") and "=" not in arg:
            continue  # --resolve and other switches
        else:
            overrides.append(arg)
    return overrides, multirun


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def _is_group(key: str) -> bool:
    """A config group (model, model/pos_embed, hydra/launcher): its values are files to find."""
    return (CONF / key).is_dir() or key.startswith("hydra/")


def _parse(overrides: list[str]):
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"cannot read the override: {first} (write key=value, a,b,c for a sweep, "
                          "quote values with spaces or brackets)") from None


def override_sets(config_name: str, overrides: list[str]) -> Iterator[list[str]]:
    """The override lists to compose for a command: itself, or for a sweep (command-line values,
    or the config's own hydra.sweeper.params) one list per value of each swept key, the other
    swept keys at their first value. Only a group's values can fail to compose on their own, so
    only those are composed one by one."""
    parsed = _parse(overrides)
    sweeps = {o.get_key_element(): list(o.sweep_string_iterator())
              for o in parsed if o.is_sweep_override()}
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = OmegaConf.select(_compose_checked(config_name, fixed), "hydra.sweeper.params") or {}
    for key, value in params.items():
        if key not in sweeps and isinstance(value, str):  # the command line wins
            own = _parse([f"{key}={value}"])[0]
            if own.is_sweep_override():
                sweeps[key] = list(own.sweep_string_iterator())
    first = [f"{k}={v[0]}" for k, v in sweeps.items() if v]
    yield fixed + first
    for key, values in sweeps.items():
        for value in values[1:] if _is_group(key) else ():
            yield fixed + [f"{k}={v[0]}" for k, v in sweeps.items() if k != key and v] + [f"{key}={value}"]


def _close(key: str, cfg: DictConfig | None) -> str:
    """`; did you mean model.embed_dim?` when a sibling key is spelled alike."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if cfg is not None and parent else cfg
    siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    match = difflib.get_close_matches(name, siblings, n=1)
    return f"; did you mean {parent + '.' if parent else ''}{match[0]}?" if match else ""


def one_line(error: Exception, overrides: list[str], base: DictConfig | None) -> ConfigError:
    """Hydra's composition error as one line naming the override and the fix."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, name = error.missing_cfg_file.rpartition("/")
        options = ", ".join(error.options or [])
        if group and options:
            return ConfigError(f"{group}={name} is not one of the {group} presets: {options} "
                               f"(conf/{group}/)")
    text = str(error)
    cause = error.__cause__
    if "An item is already at" in text:
        key = text.split("'")[1]
        return ConfigError(f"+{key}: {key} is already in the config; set it without the + ({key}=...)")
    if isinstance(error, ConfigCompositionException) and text.startswith("Could not override"):
        key = text.split("'")[1]
        if "not in struct" in str(cause):
            return ConfigError(f"{key} is not a key of the config{_close(key, base)} (add a new key "
                               f"with +{key}=...; `python src/train.py --cfg job` prints every key)")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    reason = str(cause).strip().splitlines()[0] if cause else ""
    return ConfigError(f"{first}{': ' + reason if reason and reason not in first else ''} "
                       f"(overrides: {' '.join(overrides)})")


def _failing_key(error: Exception) -> str:
    text = str(error)
    return text.split("'")[1] if text.startswith("Could not override") else ""


def _compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    try:
        return _compose(config_name, overrides)
    except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException) as e:
        others = [o for o in overrides if not o.lstrip("+~").startswith(_failing_key(e) + "=")]
        try:
            base = _compose(config_name, others)  # where to look for a key spelled alike
        except Exception:
            base = None
        raise one_line(e, overrides, base) from None


def _preset_exists(override: str) -> bool:
    """A group's preset file is there (the cheap check of a sweep's further values)."""
    key, _, value = override.lstrip("+~").partition("=")
    return not key.startswith("hydra/") and (CONF / key / f"{value}.yaml").is_file()


def compose_command(config_name: str, overrides: list[str], every: bool = True) -> list[DictConfig]:
    """Compose every configuration a command runs (see `override_sets`); ConfigError, in one
    line, on the first that does not compose. With every=False, a sweep's further values only
    have to name an existing preset file (fast, for the command line)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        configs = []
        for i, sets in enumerate(override_sets(config_name, overrides)):
            if every or not i or not _preset_exists(sets[-1]):
                configs.append(_compose_checked(config_name, sets))
        return configs


def check_command_line(argv: list[str], config_name: str) -> None:
    """Before Hydra runs `argv`: print a composition error in one line and exit 2."""
    split = split_argv(argv)
    if split is None:
        return
    try:
        compose_command(config_name, split[0], every=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
