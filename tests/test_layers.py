"""The import rules that keep the layers apart (docs/development.md, "Layout"): every module of
src/vitlab/ stands on a floor and imports from its own floor and those below, never above;
models/ is plain PyTorch that reads files and knows no run folder; a callback reaches its
LightningModule through an interface, never by importing its class. Read from the source:
nothing is imported."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

VITLAB = ROOT / "src" / "vitlab"
LIGHTNING_MODULES = {"vitlab.objectives.base_module", "vitlab.objectives.module",
                     "vitlab.objectives.mae_module"}
# The floors of src/vitlab/, the ground first. A module imports from its own floor and below.
FLOORS = [
    {"vitlab", "vitlab._moved", "vitlab.errors", "vitlab.internals", "vitlab.model_kind"},
    {"vitlab.models", "vitlab.data"},          # plain PyTorch: the networks, the images
    {"vitlab.analysis", "vitlab.flops"},       # what a model does and costs, as numbers and figures
    {"vitlab.callbacks"},                      # a run's hooks, through interfaces
    {"vitlab.runs"},                           # a run folder read back, reported, exported
    {"vitlab.objectives"},                     # the LightningModules (a teacher is a run folder)
    {"vitlab.training"},                       # the pipelines: train, evaluate
    {"vitlab.bench", "vitlab.launch", "vitlab.cli"},  # benchmarks, sweeps, command lines
]


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


def floor_of(name: str) -> int | None:
    """The floor of a dotted module name (or of a name imported from one): its longest prefix's
    ("vitlab" is the package's __init__.py alone)."""
    found = [(len(prefix), i) for i, floor in enumerate(FLOORS) for prefix in floor
             if name == prefix or (prefix != "vitlab" and name.startswith(prefix + "."))]
    return max(found)[1] if found else None


def module_name(path) -> str:
    parts = path.relative_to(VITLAB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", sorted(VITLAB.rglob("*.py")), ids=lambda p: str(p.relative_to(VITLAB)))
def test_every_module_imports_nothing_above_its_floor(path):
    name = module_name(path)
    floor = floor_of(name)
    assert floor is not None, f"{name} stands on no floor: add it to FLOORS (tests/test_layers.py)"
    above = {n: floor_of(n) for n in imports_of(path) if floor_of(n) is None or floor_of(n) > floor}
    assert not above, (f"{path.relative_to(ROOT)} (floor {floor}) imports from above it: "
                       f"{sorted(above.items(), key=str)}")


@pytest.mark.parametrize("path", sorted((VITLAB / "models").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(VITLAB)))
def test_models_import_nothing_above_them(path):
    """models/ uses itself and vitlab.errors (the ground floor) only; a run folder named by
    model.pretrained is resolved to its checkpoint file above it, in build_model."""
    outside = {n for n in imports_of(path) if not n.startswith("vitlab.models") and n != "vitlab.errors"}
    assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


@pytest.mark.parametrize("path", sorted((VITLAB / "callbacks").glob("*.py")), ids=lambda p: p.name)
def test_callbacks_import_no_lightning_module(path):
    found = {n for n in imports_of(path) if n in LIGHTNING_MODULES or n.startswith("vitlab.objectives")}
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
    assert floor_of("vitlab.runs.run_folder") > floor_of("vitlab.models.vit")
    assert floor_of("vitlab.objectives.mae_module") > floor_of("vitlab.callbacks.mae_grid")
    assert module_name(VITLAB / "runs" / "export" / "__init__.py") == "vitlab.runs.export"
