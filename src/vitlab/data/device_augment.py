"""The augmentation of conf/data/augment, run on whole batches on the device (data.on_device).

The DataLoader path runs the configured torchvision transforms image by image. Here each one
maps to a batched counterpart with the same parameters, and every image draws its own random
parameters:

  RandomCrop (zero padding), RandomHorizontalFlip   crop_flip below: two gathers, exact
  RandAugment, TrivialAugmentWide, AutoAugment      kornia's policies, the operation(s) drawn
                                                    per image (PerImagePolicy)
  RandomErasing                                     kornia's RandomErasing

Anything else has no batched version and is refused with one line naming it. kornia's policies
are its own reimplementations: their operation lists and ranges differ slightly from
torchvision's (e.g. TrivialAugment's narrower ranges than TrivialAugmentWide), so the two loaders
apply the same kind of augmentation, not identical pixels.

Randomness is keyed (keyed.ImageKeys): crop and flip draw each image's parameters from (seed,
epoch, image index), so an image is augmented alike on any device, world size or resume point;
kornia's steps draw for the images they are given together, seeded by which images those are
(the same chunk gives the same pixels: exact on resume, not across world sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ..errors import ConfigError
from .keyed import ImageKeys

Step = Callable[[torch.Tensor, ImageKeys, int], torch.Tensor]  # (images, their keys, salt)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without making the host wait: a copy from pinned memory is
    asynchronous, one from ordinary (pageable) memory may synchronise with the GPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int) -> torch.Tensor:
    """Per-image random crop of the zero-padded batch at (top, left) in [0, 2·padding], then
    a horizontal flip where `flip`: all images at once, two gathers (rows, then columns)."""
    B, C, H, W = x.shape
    if not padding:
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = F.pad(x, (padding,) * 4)
    rows = top[:, None] + torch.arange(H, device=x.device)
    cols = left[:, None] + torch.arange(W, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is a reversed column index
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, x.shape[-1]))
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))


class CropFlip:
    """RandomCrop with equal zero padding and/or RandomHorizontalFlip, on uint8 or float."""

    def __init__(self, padding: int = 0, flip: float = 0.0):
        self.padding, self.flip = padding, flip

    def __call__(self, x: torch.Tensor, keys: ImageKeys, salt: int) -> torch.Tensor:
        top = keys.randint(0, 2 * self.padding + 1, salt, 0)
        left = keys.randint(0, 2 * self.padding + 1, salt, 1)
        flip = keys.rand(salt, 2) < self.flip
        return crop_flip(x, *(to_device(t, x.device) for t in (top, left, flip)), self.padding)


class Kornia:
    """A kornia augmentation whose own random draws (kornia samples on the CPU by default)
    are seeded by the images it is given, without touching the global generator's state."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x: torch.Tensor, keys: ImageKeys, salt: int) -> torch.Tensor:
        seed = keys.group_seed(salt)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.module(x)


class PerImagePolicy:
    """A kornia auto-augmentation policy whose operation(s) each image draws for itself.

    kornia draws one operation per call for the whole batch; here every image draws its own
    `num_ops` distinct operations (sub-policies) and the images that drew the same one go
    through kornia together: a batch costs one call per operation, whatever its size.
    `ops[k]` is a kornia policy holding only operation k (with the policy's magnitude rule)."""

    def __init__(self, ops: Sequence[nn.Module], num_ops: int = 1):
        if not 1 <= num_ops <= len(ops):
            raise ConfigError(f"RandAugment num_ops={num_ops} must be in [1, {len(ops)}] on the device")
        self.ops, self.num_ops = [Kornia(op) for op in ops], num_ops

    def __call__(self, x: torch.Tensor, keys: ImageKeys, salt: int) -> torch.Tensor:
        choice = keys.rand(salt, shape=(len(self.ops),)).argsort(1)[:, : self.num_ops]
        for slot in range(self.num_ops):
            for k, op in enumerate(self.ops):
                rows = (choice[:, slot] == k).nonzero().flatten()  # on the CPU: no device sync
                if len(rows):
                    on_device = to_device(rows, x.device)
                    x[on_device] = op(x[on_device], keys.for_images(keys.ids[rows]), salt * 1000 + k)
        return x


def _policy_ops(transform: v2.Transform) -> PerImagePolicy:
    from kornia.augmentation import auto
    from kornia.augmentation.auto.autoaugment import autoaugment
    from kornia.augmentation.auto.rand_augment import rand_augment
    from kornia.augmentation.auto.trivial_augment import trivial_augment

    if isinstance(transform, v2.RandAugment):
        # torchvision: magnitude bin of num_magnitude_bins over [0, max]; kornia: m / 30 of it
        m = transform.magnitude * 30 / (transform.num_magnitude_bins - 1)
        if not 0 < m < 30:
            raise ConfigError(f"RandAugment magnitude={transform.magnitude} has no on-device "
                              f"version (kornia needs 0 < magnitude < {transform.num_magnitude_bins - 1})")
        return PerImagePolicy([auto.RandAugment(n=1, m=m, policy=[sub])
                               for sub in rand_augment.default_policy], transform.num_ops)
    if isinstance(transform, v2.TrivialAugmentWide):
        return PerImagePolicy([auto.TrivialAugment(policy=[sub])
                               for sub in trivial_augment.default_policy])
    policy = {v2.AutoAugmentPolicy.CIFAR10: autoaugment.cifar10_policy,
              v2.AutoAugmentPolicy.IMAGENET: autoaugment.imagenet_policy,
              v2.AutoAugmentPolicy.SVHN: autoaugment.svhn_policy}[transform.policy]
    return PerImagePolicy([auto.AutoAugment(policy=[sub]) for sub in policy])


def _erasing(t: v2.RandomErasing) -> Kornia:
    from kornia.augmentation import RandomErasing

    value = t.value[0] if isinstance(t.value, (list, tuple)) and len(set(t.value)) == 1 else t.value
    if not isinstance(value, (int, float)):
        raise ConfigError(f"RandomErasing value={t.value!r} has no on-device version: use a number")
    return Kornia(RandomErasing(scale=tuple(t.scale), ratio=tuple(t.ratio), value=float(value) / 255,
                                p=t.p))


class DeviceAugment:
    """The configured augmentation as batched steps. Crop and flip run on the uint8 images;
    the other steps on floats in [0, 1] (what kornia expects). Returns uint8 when every step
    is a crop or flip, else float in [0, 1]."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, x: torch.Tensor, keys: ImageKeys) -> torch.Tensor:
        """`x`: the images `keys.ids` of the split; each step draws under its own salt."""
        for salt, step in enumerate(self.steps, 1):
            if not isinstance(step, CropFlip) and x.dtype == torch.uint8:
                x = x.float().div_(255)
            x = step(x, keys, salt)
        return x


def device_augment(augment: Mapping | Sequence, img_size: int, in_chans: int = 3) -> DeviceAugment:
    """The batched version of a conf/data/augment list; a ConfigError (one line) for a
    transform that has none."""
    steps: list[Step] = []
    for t in augment.values() if isinstance(augment, Mapping) else augment:
        if t is None:
            continue
        if isinstance(t, v2.RandomCrop) and isinstance(t.padding, (int, list, tuple)) \
                and t.padding_mode == "constant" and tuple(t.size) == (img_size, img_size):
            pad = [t.padding] if isinstance(t.padding, int) else list(t.padding)
            if len(set(pad)) != 1:
                raise ConfigError("data.on_device=true: the random crop needs equal padding on all sides")
            steps.append(CropFlip(padding=int(pad[0])))
        elif isinstance(t, v2.RandomHorizontalFlip):
            steps.append(CropFlip(flip=float(t.p)))
        elif isinstance(t, (v2.RandAugment, v2.TrivialAugmentWide, v2.AutoAugment)):
            if in_chans != 3:
                raise ConfigError(f"data.on_device=true: {type(t).__name__} needs 3-channel images "
                                  f"(data.in_chans={in_chans})")
            steps.append(_policy_ops(t))
        elif isinstance(t, v2.RandomErasing):
            steps.append(_erasing(t))
        else:
            raise ConfigError(f"data.on_device=true has no batched version of {type(t).__name__}: "
                              f"use crop, flip, RandAugment, TrivialAugmentWide, AutoAugment or "
                              f"RandomErasing (data/augment=basic, randaugment, trivialaugment, ...)")
    return DeviceAugment(steps)


def runs_on_device(augment: Mapping | Sequence, img_size: int, in_chans: int = 3) -> bool:
    """Whether every transform of the augmentation has a batched version (data.on_device=auto)."""
    try:
        device_augment(augment, img_size, in_chans)
    except ConfigError:
        return False
    return True
