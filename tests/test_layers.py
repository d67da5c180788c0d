"""The import rules that keep the layers apart (DESIGN.md's layout): models/ is plain PyTorch that
reads files and knows no run folder, and a callback reaches its LightningModule through an
interface, never by importing its class. Read from the source: nothing is imported."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

VITLAB = ROOT / "src" / "vitlab"
LIGHTNING_MODULES = {"vitlab.objectives.base_module", "vitlab.objectives.module",
                     "vitlab.objectives.mae_module"}


def vitlab_imports(text: str, path) -> set[str]:
    """The vitlab modules that source `text` of the file at `path` imports, relative imports
    resolved, as dotted names."""
    package = path.relative_to(VITLAB.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            name = ".".join([*base, *([node.module] if node.module else [])])
            found |= {f"{name}.{a.name}" for a in node.names} if node.module is None else {name}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n == "vitlab" or n.startswith("vitlab.")}


def imports_of(path) -> set[str]:
    return vitlab_imports(path.read_text(), path)


@pytest.mark.parametrize("path", sorted((VITLAB / "models").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(VITLAB)))
def test_models_import_nothing_above_them(path):
    """models/ uses itself and vitlab.errors (the ground floor) only; a run folder named by
    model.pretrained is resolved to its checkpoint file above it, in build_model."""
    outside = {n for n in imports_of(path) if not n.startswith("vitlab.models") and n != "vitlab.errors"}
    assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


@pytest.mark.parametrize("path", sorted((VITLAB / "callbacks").glob("*.py")), ids=lambda p: p.name)
def test_callbacks_import_no_lightning_module(path):
    found = imports_of(path) & LIGHTNING_MODULES
    assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}: use a method or a Protocol"


def test_the_reader_resolves_relative_imports():
    """What the rules above would catch: the imports they were written against."""
    read = VITLAB / "models" / "pretrained" / "read.py"
    assert "vitlab.runs.run_folder" in vitlab_imports("from ...runs.run_folder import checkpoint_of\n", read)
    assert "vitlab.models.timm_convert" in vitlab_imports("from ..timm_convert import x\n", read)
    grid = VITLAB / "callbacks" / "mae_grid.py"
    assert vitlab_imports("from ..objectives.mae_module import MaskedAutoencoderModule\n",
                          grid) == {"vitlab.objectives.mae_module"}
    assert vitlab_imports("from . import figures\n", grid) == {"vitlab.callbacks.figures"}
