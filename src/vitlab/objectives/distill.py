"""DeiT's knowledge distillation (Touvron et al. 2021; facebookresearch/deit `losses.py`): a
frozen teacher's prediction on the student's own batch as a second target.

    soft: (1 - α) · CE(class head, y) + α · τ² · KL(softmax(t/τ) ‖ softmax(s/τ)) / (B · C)
    hard: (1 - α) · CE(class head, y) + α · CE(s, argmax t)

s is the distillation head's logits (a ViT with `model.distill_token=true`), or the class
head's when the student has none (plain knowledge distillation, as vit-pytorch allows); t the
teacher's logits on exactly the images the student saw (Mixup/CutMix included); CE(class head,
y) is the module's own loss (label smoothing, soft targets). The KL is summed over the batch and
divided by the number of logits B · C, as DeiT does.

The teacher is a vitlab run folder or .ckpt (read through run_folder.py) or a timm model name
with a local weights file. It is held outside the LightningModule's module tree (`Teacher`):
never in the student's checkpoint, optimiser or DDP wrapper, shared (not copied) by the EMA's
copy of the module, rebuilt from its file whenever the module is (a resumed run). It runs frozen,
in eval mode, without gradients, on the student's device and, under a true half precision, in
its dtype; under mixed precision the step's autocast covers it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..errors import ConfigError
from ..models.vit import prediction
from .metrics import epoch_mean

TYPES = ("none", "soft", "hard")


def distill_type(kind: str | None, teacher) -> str:
    """The one rule of `module.distill.type`: one of TYPES, DeiT's hard by default with a teacher
    and none without, and soft or hard only with a teacher (config_checks and the module ask here)."""
    kind = ("hard" if teacher else "none") if kind is None else kind
    if kind not in TYPES:
        raise ConfigError(f"module.distill.type={kind!r} is not one of {', '.join(TYPES)}")
    if kind != "none" and not teacher:
        raise ConfigError(f"module.distill.type={kind} needs a teacher: module.distill.teacher="
                          "<vitlab run folder or .ckpt | timm model name>")
    return kind


def distillation_term(student: torch.Tensor, teacher: torch.Tensor, kind: str, tau: float) -> torch.Tensor:
    """DeiT's distillation term of the student's logits against the teacher's (both (B, C))."""
    if kind == "soft":
        return F.kl_div(F.log_softmax(student.float() / tau, dim=-1),
                        F.log_softmax(teacher.float() / tau, dim=-1),
                        reduction="sum", log_target=True) * tau**2 / student.numel()
    if kind == "hard":
        return F.cross_entropy(student.float(), teacher.argmax(dim=-1))
    raise ValueError(f"distillation type {kind!r} is not one of soft, hard")


class Teacher:
    """A frozen network kept out of the student's module tree. Copies of the module (the EMA's
    average) share it: it never trains, so one instance serves all."""

    def __init__(self, model: nn.Module, compile: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.place = None  # (device, dtype) it was last moved to
        if compile:
            self.model.compile()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        if self.place != (x.device, dtype):  # once: the first batch tells where the student runs
            self.model.to(device=x.device, dtype=dtype)
            self.place = (x.device, dtype)
        return prediction(self.model(x))

    def __deepcopy__(self, memo):
        return self


def check_classes(teacher: nn.Module, num_classes: int, name: str) -> None:
    found = getattr(teacher, "num_classes", num_classes)
    if found != num_classes:
        raise ConfigError(f"module.distill.teacher={name} predicts {found} classes, the data has "
                          f"{num_classes}: a teacher must be trained on the student's classes")


def timm_teacher(name: str, weights: str | None, num_classes: int, in_chans: int,
                 kwargs: Mapping | None = None) -> nn.Module:
    """timm.create_model(name) with the local weights file loaded strictly (no download)."""
    import timm

    from ..models.pretrained.read import load_torch, unwrap

    if not timm.is_model(name):
        raise ConfigError(f"module.distill.teacher={name}: not a vitlab run folder or .ckpt, nor a "
                          f"timm model name (timm.list_models() lists them)")
    if not weights:
        raise ConfigError(f"module.distill.teacher={name} is a timm model: give its local weights "
                          f"file with module.distill.weights=<.pth|.bin|.safetensors>")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"module.distill.weights={weights}: no such file")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              **dict(kwargs or {}))
    try:
        state = unwrap(load_torch(path))
    except Exception as e:  # torch and safetensors each fail on a bad file their own way
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"module.distill.weights={weights}: cannot read it ({first})") from None
    own = model.state_dict()
    for key, value in own.items():
        if key not in state or state[key].shape != value.shape:
            found = tuple(state[key].shape) if key in state else "missing"
            raise ConfigError(f"module.distill.weights={weights} does not fit timm's {name} for "
                              f"{num_classes} classes and {in_chans} channels: {key} is {found} in "
                              f"the file, {tuple(value.shape)} in the model")
    extra = next((k for k in state if k not in own), None)
    if extra:
        raise ConfigError(f"module.distill.weights={weights} does not fit timm's {name}: the file "
                          f"has {extra}, which the model lacks")
    model.load_state_dict(state)
    return model


DATA_KEYS = ("num_classes", "in_chans", "img_size", "mean", "std")  # what a teacher run must share


def check_teacher(teacher: str, weights: str | None, data: Mapping) -> None:
    """Before anything is built: the teacher exists (a run folder or .ckpt, else a timm name with
    its weights file), and a vitlab teacher was trained on images like the student's (classes,
    channels, size, normalisation), since it sees exactly the student's batch."""
    from omegaconf.errors import OmegaConfBaseException

    from ..runs.run_folder import run_config

    path = Path(teacher).expanduser()
    if not path.exists():
        import timm

        if not timm.is_model(teacher):
            raise ConfigError(f"module.distill.teacher={teacher}: no such run folder or .ckpt, nor a "
                              "timm model name (timm.list_models() lists them)")
        if not weights or not Path(weights).expanduser().is_file():
            raise ConfigError(f"module.distill.teacher={teacher} is a timm model: give its local "
                              f"weights file with module.distill.weights=<file> (got {weights})")
        return
    theirs = run_config(path)
    for key in DATA_KEYS:
        try:
            mine, trained = (OmegaConf.select(c, f"data.{key}") for c in (data, theirs))
        except OmegaConfBaseException:  # an interpolation of the saved config that cannot resolve
            continue
        mine, trained = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                         for v in (mine, trained))
        if mine is not None and trained is not None and mine != trained:
            raise ConfigError(f"module.distill.teacher={teacher} was trained with data.{key}={trained}, "
                              f"the student's data.{key}={mine}: the teacher sees the student's "
                              "batches, so train it on the same kind of images")


def load_teacher(teacher: str, weights: str | None, num_classes: int, in_chans: int,
                 timm_kwargs: Mapping | None = None) -> nn.Module:
    """The teacher network with its trained weights: a vitlab run folder or .ckpt (its best
    checkpoint, its own config), or a timm model name with `weights`."""
    from ..runs.run_folder import load_model

    if Path(teacher).expanduser().exists() and weights:
        raise ConfigError(f"module.distill.weights={weights} is for a timm teacher; "
                          f"module.distill.teacher={teacher} brings its own checkpoint")
    # built aside from the global generator: its (overwritten) initialisation must not shift the
    # student's stream, so students of one seed train alike whichever teacher they have
    with torch.random.fork_rng(devices=[]):
        if Path(teacher).expanduser().exists():
            model = load_model(teacher)[1]
        else:
            model = timm_teacher(teacher, weights, num_classes, in_chans, timm_kwargs)
    check_classes(model, num_classes, teacher)
    return model


class Distillation(nn.Module):
    """The distillation part of a LightningModule: the teacher, DeiT's loss, and the test-time
    agreement of student and teacher (DeiT's Table 4). With `type=none` and a teacher it only
    measures agreement: the baseline a distilled student is compared with."""

    def __init__(self, teacher: nn.Module, num_classes: int, type: str = "hard", alpha: float = 0.5,
                 tau: float = 1.0, compile: bool = False, distill_token: bool = False):
        super().__init__()
        self.teacher = Teacher(teacher, compile)
        self.type, self.alpha, self.tau = type, float(alpha), float(tau)
        agree = {"agreement": MulticlassAccuracy(num_classes, average="micro")}
        if distill_token:  # which head takes after the teacher (DeiT, Table 4)
            agree |= {"agreement_cls": MulticlassAccuracy(num_classes, average="micro"),
                      "agreement_dist": MulticlassAccuracy(num_classes, average="micro")}
        self.agreement = MetricCollection(agree, prefix="test/")
        self.teacher_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_term = epoch_mean()

    @staticmethod
    def options(options: Mapping | None) -> dict:
        """`module.distill` as a plain dict (Hydra hands over a DictConfig)."""
        if OmegaConf.is_config(options):
            return OmegaConf.to_container(options, resolve=True)
        return dict(options or {})

    @classmethod
    def of(cls, options: Mapping | None, num_classes: int, model: nn.Module) -> Distillation | None:
        """From `module.distill` (conf/module/default.yaml); None without a teacher."""
        options = cls.options(options)
        name = options.get("teacher")
        kind = distill_type(options.get("type"), name)
        if not name:
            return None
        token = getattr(model, "dist_token", None) is not None
        teacher = load_teacher(str(name), options.get("weights"), num_classes,
                               options.get("in_chans", 3), options.get("timm_kwargs"))
        if kind != "none" and token:
            model.set_distilled_training(True)  # both heads' logits while training
        return cls(teacher, num_classes, kind, options.get("alpha", 0.5), options.get("tau", 1.0),
                   bool(options.get("compile")), token)

    def loss(self, criterion: nn.Module, outputs, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of the student's outputs on batch (x, y): the class head against the
        labels, and the distillation (or class) head against the teacher on the same x."""
        cls, dist = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        base = criterion(cls, y)
        if self.type == "none":
            return base
        term = distillation_term(dist, self.teacher(x), self.type, self.tau)
        self.train_term.update(term.detach().expand(x.shape[0]))
        return (1 - self.alpha) * base + self.alpha * term

    def update_test(self, outputs, x: torch.Tensor, y: torch.Tensor) -> None:
        """Count, per test image, whether student and teacher predict the same class."""
        t = self.teacher(x)
        target = t.argmax(dim=-1)
        self.agreement["agreement"].update(prediction(outputs), target)
        if isinstance(outputs, tuple) and "agreement_cls" in self.agreement:
            self.agreement["agreement_cls"].update(outputs[0], target)
            self.agreement["agreement_dist"].update(outputs[1], target)
        self.teacher_acc.update(t, y.argmax(-1) if y.ndim > 1 else y)

    def compute(self, stage: str) -> dict[str, torch.Tensor]:
        """This epoch's values of `stage` for the logger (and the summary); its counts reset."""
        out = {}
        if stage == "train":
            if self.train_term.update_count:
                out["train/loss_distill"] = self.train_term.compute()
            self.train_term.reset()
        elif stage == "test":
            if self.teacher_acc.update_count:
                out |= {**self.agreement.compute(), "test/teacher_acc": self.teacher_acc.compute()}
            self.agreement.reset()
            self.teacher_acc.reset()
        return out
