"""What kind of model a config builds ("vit", "mlp", "cnn"), asked of the class or factory its
`_target_` names (each says it: VisionTransformer.kind), not read from the target's spelling; so
are a module's capabilities (ImageClassifier.classifies, MaskedAutoencoderModule.needs_labels)."""

from __future__ import annotations

from hydra._internal.utils import _locate  # hydra's get_object, without its error log


def target_class(node):
    """The class or factory a config node's `_target_` names; None when it names none importable
    (it fails on its own, naming the target, when instantiated)."""
    target = node.get("_target_") if node is not None else None
    try:
        return _locate(str(target)) if target else None
    except (ImportError, ValueError):
        return None


def model_kind(model_cfg) -> str | None:
    return getattr(target_class(model_cfg), "kind", None)
