"""A trained run as a timm model folder: `model.safetensors` with timm's parameter names and a
`config.json` in timm's hub layout, so `timm.create_model("local-dir:<folder>", pretrained=True)`
builds the same network with the same weights.

The reverse of vitlab.models.timm_convert: timm's VisionTransformer is vitlab's with learned 1-D
positions at the stem, the class token or the mean of the (normalised) patch tokens, plain
attention, and a linear patch projection or timm's R50 stem. Anything else is refused with the
reason, before a file is written."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ...errors import ConfigError
from ...model_kind import model_kind
from ...models.timm_convert import RENAMES
from ..trained import Trained

TIMM_NAMES = {  # (patch, width, depth, heads) -> timm's name for that size
    (16, 192, 12, 3): "vit_tiny_patch16_224",
    (16, 384, 12, 6): "vit_small_patch16_224",
    (16, 768, 12, 12): "vit_base_patch16_224",
    (32, 768, 12, 12): "vit_base_patch32_224",
    (16, 1024, 24, 16): "vit_large_patch16_224",
    (14, 1280, 32, 16): "vit_huge_patch14_224",
}
GENERIC = "vit_base_patch16_224"  # other sizes: its factory, every size argument overridden
DISTILLED = "deit_base_distilled_patch16_224"  # distill_token: timm's VisionTransformerDistilled
HYBRID = "vit_base_r50_s16_224"   # timm's R50 hybrid (ResNetV2 [3, 4, 9], GroupNorm, StdConv)
R50 = dict(layers=[3, 4, 9], preact=False, stem_type="same")
TO_TIMM = {ours: theirs for theirs, ours in RENAMES.items()}


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def is_cnn(cfg) -> bool:
    """model=cnn: already timm's own model, names and all."""
    return model_kind(cfg.model) == "cnn"


def unsupported(cfg) -> str | None:
    """Why timm cannot represent the run's model, or None."""
    m = cfg.model
    if is_cnn(cfg):
        kwargs = _plain(m.get("backbone_kwargs"))
        if "_target_" in json.dumps(kwargs):
            return "model.backbone_kwargs builds objects: timm's config.json holds plain values only"
        return None
    if model_kind(m) != "vit":
        return f"{m.get('_target_')}: timm has no such classifier (export --to onnx works)"
    pos = m.get("pos_embed") or {}
    target = str(pos.get("_target_", ""))
    if not target.endswith("Learned1d"):
        return (f"positional variant {target.rsplit('.', 1)[-1] or 'none'}: timm's "
                f"VisionTransformer has learned 1-D positions only (export --to onnx works)")
    if pos.get("where", "stem") != "stem":
        return f"positions where={pos.where}: timm adds its table once, at the stem"
    if m.get("pool", "cls") not in ("cls", "mean"):
        return f"pool={m.pool}: timm pools by class token or mean"
    if m.get("attention"):
        return f"attention {m.attention._target_.rsplit('.', 1)[-1]}: timm's ViT has plain attention"
    if m.get("class_token_at", 0):
        return "class_token_at > 0: timm's class token joins at the stem"
    if m.get("embed") and m.get("distill_token"):
        return "a hybrid with distill_token: timm's distilled ViT has a linear patch projection"
    if m.get("embed"):
        e = m.embed
        hybrid = str(e.get("_target_", "")).endswith("HybridEmbed")
        kw = OmegaConf.to_container(e.backbone_kwargs, resolve=True) if hybrid else {}
        r50 = (hybrid and e.backbone == "resnetv2_50" and int(m.patch_size) == 1
               and all(kw.get(k) == v for k, v in R50.items()))
        if not r50:
            name = str(e.get("_target_", "")).rsplit(".", 1)[-1]
            return (f"embed {name} ({e.get('backbone', '')}): timm's hybrids are the R50 of "
                    f"model=vit_hybrid_r50_b16 only")
    return None


def timm_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """vitlab's state dict under timm's names (contiguous, for safetensors)."""
    out = {}
    for key, value in model.state_dict().items():
        new = next((theirs + key[len(ours):] for ours, theirs in TO_TIMM.items()
                    if key.startswith(ours)), key)
        out[new] = value.detach().contiguous()
    return out


def _pretrained_cfg(trained: Trained, first_conv: str, classifier: str) -> dict:
    h, w = trained.img_size
    return {"input_size": [trained.in_chans, h, w], "fixed_input_size": True,
            "interpolation": "bilinear", "crop_pct": min(h, w) / trained.resize,
            "crop_mode": "center", "mean": trained.mean, "std": trained.std,
            "num_classes": len(trained.classes), "first_conv": first_conv,
            "classifier": classifier}


def cnn_config(trained: Trained) -> dict:
    m, model = trained.cfg.model, trained.model
    args = dict(in_chans=trained.in_chans, num_classes=len(trained.classes),
                **_plain(m.get("backbone_kwargs")))
    info = getattr(model, "pretrained_cfg", {}) or {}
    return {"architecture": str(m.backbone), "num_classes": len(trained.classes),
            "num_features": int(getattr(model, "num_features", 0)), "model_args": args,
            "pretrained_cfg": {**_pretrained_cfg(trained, info.get("first_conv", ""),
                                                 info.get("classifier", "")),
                               "fixed_input_size": False},  # a CNN takes no img_size argument
            "label_names": trained.classes}


def timm_config(trained: Trained) -> dict:
    """config.json in timm's hub layout: architecture, model arguments, preprocessing, labels."""
    if is_cnn(trained.cfg):
        return cnn_config(trained)
    m = trained.cfg.model
    hybrid = bool(m.get("embed"))
    size = (int(m.patch_size), int(m.embed_dim), int(m.depth), int(m.num_heads))
    architecture = HYBRID if hybrid else TIMM_NAMES.get(size, GENERIC)
    if m.get("distill_token"):  # eval: the mean of both heads, in timm as in vitlab
        architecture = DISTILLED
    args = dict(img_size=list(trained.img_size), in_chans=trained.in_chans,
                num_classes=len(trained.classes), embed_dim=size[1], depth=size[2],
                num_heads=size[3], mlp_ratio=float(m.mlp_ratio), qkv_bias=bool(m.qkv_bias))
    if not hybrid:
        args["patch_size"] = size[0]
    if m.pool == "mean":  # vitlab normalises every token, then averages: timm's fc_norm=False
        args.update(class_token=False, global_pool="avg", fc_norm=False)
    first_conv = "patch_embed.backbone.stem.conv" if hybrid else "patch_embed.proj"
    return {"architecture": architecture, "num_classes": len(trained.classes),
            "num_features": size[1], "model_args": args,
            "pretrained_cfg": _pretrained_cfg(trained, first_conv, "head"),
            "label_names": trained.classes}


def export_timm(trained: Trained, out: Path) -> Path:
    """Write the timm folder; check that timm builds it and gives vitlab's logits (1e-5)."""
    from safetensors.torch import save_file

    reason = unsupported(trained.cfg)
    if reason:
        raise ConfigError(f"{trained.path}: cannot export to timm: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    state = ({k: v.detach().contiguous() for k, v in trained.model.state_dict().items()}
             if is_cnn(trained.cfg) else timm_state_dict(trained.model))
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(timm_config(trained), indent=2) + "\n")
    check_timm(trained, out)
    return out


def load_timm(folder: Path) -> torch.nn.Module:
    import timm

    return timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True).eval()


def check_timm(trained: Trained, folder: Path, atol: float = 1e-5) -> float:
    """max |Δ logits| between vitlab's model and timm's build of the folder; raises past `atol`."""
    images = trained.example()
    with torch.no_grad():
        ours, theirs = trained.model(images), load_timm(folder)(images)
    diff = float((ours - theirs).abs().max())
    if diff > atol:
        raise RuntimeError(f"{folder}: timm's logits differ from vitlab's by {diff:.2e} (> {atol})")
    return diff
