"""Validate a composed config before any data is loaded or model built.

Each rule names its key; the first failure raises ConfigError with one line saying what is
wrong and what would fix it. RULES runs them in order; each rule's docstring says what it checks
(docs/guides/errors.md lists the messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from ..errors import ConfigError
from ..model_kind import model_kind, target_class
from ..models.pos_embed.base import AbsolutePositionalEmbedding
from ..models.rnn import RNN
from ..models.vit import VisionTransformer
from ..objectives.distill import check_teacher, distill_type
from ..objectives.optim import LR_SCALING
from .distributed import BatchPlan, batch_plan

# the lecture's baselines (not ViTs): their classes' `kind`, their presets' names
BASELINES = ("mlp", "cnn", "rnn")

_MISSING = object()


def get(cfg: DictConfig, key: str, default=_MISSING):
    value = OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    return value


def _number(cfg, key, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    value = get(cfg, key, None)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {kind}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{key}={value} is outside {rng}")


def _model_rule(check: Callable, *args, **kwargs) -> None:
    """A model class's own argument rule (its ValueError names the key) as the one-line error."""
    try:
        check(*args, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_model(cfg: DictConfig) -> None:
    """model: sizes positive integers, heads divide the width, pool known (VisionTransformer.check),
    patch divides the image (pure embedding), drop rates in [0, 1). (The MLP and CNN baselines
    have no such keys: check_baseline.)"""
    m = cfg.model
    if model_kind(m) in BASELINES:
        return
    for key in ("embed_dim", "depth", "num_heads", "patch_size"):
        _number(cfg, f"model.{key}", lo=1, integer=True)
    _number(cfg, "model.mlp_ratio", lo=0, lo_open=True)
    for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
        _number(cfg, f"model.{key}", lo=0, hi=1, hi_open=True)
    _model_rule(VisionTransformer.check, m.embed_dim, m.num_heads, get(cfg, "model.pool", "cls"),
                prefix="model.")
    img = get(cfg, "data.img_size", None)
    if get(cfg, "model.embed", None) is None and isinstance(img, int) and img % m.patch_size:
        divisors = [p for p in range(2, img // 2 + 1) if img % p == 0]
        raise ConfigError(f"model.patch_size={m.patch_size} does not divide data.img_size={img}; "
                          f"use one of {divisors}")


def check_baseline(cfg: DictConfig) -> None:
    """model=mlp, model=cnn, model=rnn: hidden widths positive integers, drop rates in [0, 1);
    the RNN's cell, pooling and sizes (check_rnn); ViT-only options
    (model.pretrained, module.stem_lr_scale) refused."""
    name = model_kind(cfg.model)
    if name not in BASELINES:
        return
    dims, rules = get(cfg, "model.hidden_dims", None), target_class(cfg.model)
    if dims is not None and hasattr(rules, "check"):  # MLP.check
        _model_rule(rules.check, list(dims), prefix="model.")
    for key in ("drop_rate", "drop_path_rate"):
        _number(cfg, f"model.{key}", lo=0, hi=1, hi_open=True)
    if name == "rnn":
        check_rnn(cfg)
    if get(cfg, "model.pretrained", None):
        start = "timm weights with model.weights=<file>" if name == "cnn" else "no weights"
        raise ConfigError(f"model.pretrained starts a ViT from a checkpoint; model={name} takes {start}")
    if get(cfg, "module.stem_lr_scale", None) is not None:
        raise ConfigError(f"module.stem_lr_scale scales a hybrid's CNN stem; model={name} has none: "
                          "set module.stem_lr_scale=null")


def check_rnn(cfg: DictConfig) -> None:
    """model=rnn: a known cell and pooling, positive sizes (the patch embedding itself refuses a
    patch that does not divide the image)."""
    _model_rule(RNN.check, get(cfg, "model.cell", None), get(cfg, "model.pool", None), prefix="model.")
    for key in ("hidden", "num_layers", "embed_dim", "patch_size"):
        _number(cfg, f"model.{key}", lo=1, integer=True)


def check_pos_embed(cfg: DictConfig) -> None:
    """model.pos_embed: `where` known, and other than stem only for the absolute variants
    (learned_1d, learned_2d, sincos_2d; the others act inside attention or not at all): the
    variant's own rule (PositionalEmbedding.check)."""
    where = get(cfg, "model.pos_embed.where", None)
    if where is None:
        return
    variant = target_class(get(cfg, "model.pos_embed", None))
    if not hasattr(variant, "check"):  # an unknown target fails on its own when instantiated
        variant = AbsolutePositionalEmbedding  # only the value of `where` is checked
    _model_rule(variant.check, where, prefix="model.pos_embed.")


def check_data(cfg: DictConfig) -> None:
    """data: classes >= 2 (0, unlabelled images, only for module=mae, without
    samples_per_class), image size and batch size positive, fractions in range,
    samples_per_class positive."""
    classes = get(cfg, "data.num_classes", None)
    if classes == 0 and getattr(target_class(get(cfg, "module", None)), "needs_labels", True):
        raise ConfigError("data.num_classes=0: these images have no labels (data=unlabelled), so only "
                          "MAE pre-training can use them (experiment=mae_pretrain or module=mae)")
    if classes != 0:
        _number(cfg, "data.num_classes", lo=2, integer=True)
    elif get(cfg, "data.samples_per_class", None) is not None:
        raise ConfigError(f"data.samples_per_class={get(cfg, 'data.samples_per_class')}: these images have "
                          "no classes (data.num_classes=0); take a share with data.train_fraction")
    _number(cfg, "data.img_size", lo=1, integer=True)
    _number(cfg, "data.in_chans", lo=1, integer=True)
    _number(cfg, "data.batch_size", lo=1, integer=True)
    _number(cfg, "data.num_workers", lo=0, integer=True)
    _number(cfg, "data.train_fraction", lo=0, hi=1, lo_open=True)
    _number(cfg, "data.val_fraction", lo=0, hi=1, lo_open=True, hi_open=True)
    _number(cfg, "data.samples_per_class", lo=1, integer=True)


def check_streaming(cfg: DictConfig) -> None:
    """data=streaming: litdata installed (the `streaming` extra)."""
    if str(get(cfg, "data._target_", "")).endswith("StreamingDataModule"):
        from ..data.shards import require_litdata

        require_litdata()


def check_module(cfg: DictConfig) -> None:
    """module: lr > 0, weight decay >= 0, label smoothing and min-lr ratio in [0, 1),
    warm-up >= 0, layer decay in (0, 1], frozen layers >= 0."""
    _number(cfg, "module.optimizer.lr", lo=0, lo_open=True)
    _number(cfg, "module.weight_decay", lo=0)
    _number(cfg, "module.label_smoothing", lo=0, hi=1, hi_open=True)
    _number(cfg, "module.warmup_epochs", lo=0)
    _number(cfg, "module.min_lr_ratio", lo=0, hi=1, hi_open=True)
    _number(cfg, "module.warmup_steps", lo=0, integer=True)
    _number(cfg, "module.layer_decay", lo=0, hi=1, lo_open=True)
    _number(cfg, "module.freeze_layers", lo=0, integer=True)


def check_distill(cfg: DictConfig) -> None:
    """module.distill: type hard, soft, none (or null), alpha in [0, 1], tau > 0, a teacher for
    hard/soft that exists and, for a vitlab run, was trained on the student's kind of images;
    model.distill_token only with pool=cls."""
    if get(cfg, "model.distill_token", False):
        _model_rule(VisionTransformer.check, pool=get(cfg, "model.pool", "cls"), distill_token=True,
                    prefix="model.")
    _number(cfg, "module.distill.alpha", lo=0, hi=1)
    _number(cfg, "module.distill.tau", lo=0, lo_open=True)
    teacher = get(cfg, "module.distill.teacher", None)
    distill_type(get(cfg, "module.distill.type", None), teacher)
    if teacher:
        check_teacher(str(teacher), get(cfg, "module.distill.weights", None), cfg)


def check_batch(cfg: DictConfig) -> BatchPlan:
    """data.batch_size (the global batch) divisible by the world size (trainer.devices x
    trainer.num_nodes) and, with data.max_device_batch, into equal micro-batches; lr scaling
    rule known; accumulation derived, not set. Returns the plan, which validate hands on."""
    _number(cfg, "data.max_device_batch", lo=1, integer=True)
    _number(cfg, "module.base_batch_size", lo=1, integer=True)
    rule = get(cfg, "module.lr_scaling", "none")
    if rule not in LR_SCALING:
        raise ConfigError(f"module.lr_scaling={rule!r} is not one of {', '.join(LR_SCALING)}")
    if get(cfg, "trainer.accumulate_grad_batches", None) is not None:
        raise ConfigError("trainer.accumulate_grad_batches is derived from data.batch_size (global) "
                          "and data.max_device_batch: set those instead")
    return batch_plan(cfg)


def check_trainer(cfg: DictConfig) -> None:
    """trainer: max_epochs >= 1 (or -1 with max_steps), gradient clipping >= 0, devices a
    count, a list of indices or auto."""
    epochs = get(cfg, "trainer.max_epochs", None)
    if epochs is not None and epochs != -1:
        _number(cfg, "trainer.max_epochs", lo=1, integer=True)
    _number(cfg, "trainer.gradient_clip_val", lo=0)
    devices = get(cfg, "trainer.devices", None)
    text = str(devices).strip("[]() ").replace(" ", "")
    if devices is not None and devices not in ("auto", -1, "-1") and (
            isinstance(devices, bool) or not re.fullmatch(r"\d+(,\d+)*,?", text) or devices in (0, "0")):
        raise ConfigError(f"trainer.devices={devices!r}: use a number of devices (>= 1), a list of "
                          "device indices ([0,1]) or auto")


def check_seed(cfg: DictConfig) -> None:
    """seed: an integer."""
    _number(cfg, "seed", integer=True)


def check_device(cfg: DictConfig) -> None:
    """trainer: a GPU accelerator only where a CUDA device is visible, and no more devices than
    are visible (checked last: the other rules hold on any machine)."""
    accelerator = get(cfg, "trainer.accelerator", "auto")
    if accelerator not in ("gpu", "cuda"):
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not visible:
        raise ConfigError(f"trainer.accelerator={accelerator}: no CUDA device is visible "
                          "(torch.cuda.is_available() is False); use trainer=cpu, or trainer=ddp_cpu "
                          "for data-parallel CPU processes")
    devices = get(cfg, "trainer.devices", 1)
    wanted = len(devices) if not isinstance(devices, (int, str)) else devices
    if isinstance(wanted, int) and wanted > visible:
        raise ConfigError(f"trainer.devices={devices} asks for {wanted} GPUs but {visible} "
                          f"{'is' if visible == 1 else 'are'} visible; use trainer.devices={visible} "
                          "or fewer")


RULES: list[Callable[[DictConfig], object]] = [
    check_seed, check_data, check_streaming, check_model, check_baseline, check_pos_embed, check_module,
    check_trainer, check_batch, check_distill, check_device,
]


def validate(cfg: DictConfig) -> BatchPlan:
    """Raise ConfigError on the first invalid value (missing mandatory values included); else the
    run's batch plan (check_batch's: computed once, then passed on to train.build and summary.json)."""
    try:
        missing = [k for k in sorted(OmegaConf.missing_keys(cfg)) if not k.startswith("hydra")]
        if missing:
            raise ConfigError(f"{missing[0]} must be set (e.g. `{missing[0]}=...` on the command line)")
        outcome = {rule: rule(cfg) for rule in RULES}
        return outcome[check_batch]
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:  # e.g. via interpolation
        key = re.search(r"Missing mandatory value: (\S+)", str(e))
        key = key.group(1) if key else e.full_key
        raise ConfigError(f"{key} must be set (e.g. `{key}=...` on the command line)") from None
