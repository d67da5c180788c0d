"""The modules' names before the layout (vitlab.module, vitlab.report, ...) still import, as the
very objects of their new names: run folders saved earlier name their classes so, checkpoints may
pickle them, and `python -m` with an old name runs the new module."""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from conftest import CONF, ROOT
from hydra.utils import get_class

from vitlab._moved import MOVED, new_name

SRC = ROOT / "src"


def run_module(name: str, *args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", name, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_name_is_the_new_module(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__name__ == MOVED[old] and module.__spec__.name == MOVED[old]
    assert not (SRC / (old.replace(".", "/") + ".py")).exists()
    assert not (SRC / old.replace(".", "/")).exists()  # no stub left at the old path


def test_old_targets_and_pickles_give_the_same_classes():
    from vitlab.objectives.mae_module import MaskedAutoencoderModule
    from vitlab.objectives.module import ImageClassifier
    from vitlab.runs.export.timm import export_timm
    from vitlab.runs.run_folder import check_target
    from vitlab.training.csv_logger import CSVLogger
    from vitlab.training.loggers import WandbLogger

    assert get_class("vitlab.module.ImageClassifier") is ImageClassifier
    assert get_class("vitlab.mae_module.MaskedAutoencoderModule") is MaskedAutoencoderModule
    assert get_class("vitlab.csv_logger.CSVLogger") is CSVLogger
    assert get_class("vitlab.loggers.WandbLogger") is WandbLogger
    import vitlab.export.timm

    assert vitlab.export.timm.export_timm is export_timm  # a name under an old package
    assert pickle.loads(b"cvitlab.module\nImageClassifier\n.") is ImageClassifier
    check_target("vitlab.module.ImageClassifier", "module")  # an old run folder's config may build it
    assert new_name("vitlab.models.vit") is None and new_name("vitlab.runs.report") is None


def test_the_code_and_configs_use_the_new_names():
    """The old names are for what was saved before; nothing in the repository is written with them."""
    files = [*SRC.rglob("*.py"), *(p for p in (ROOT / "tests").glob("*.py") if p.name != "test_moved.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            old = [n for n in names if n and new_name(n)]
            assert not old, f"{path.relative_to(ROOT)}:{node.lineno} imports {old}: use {new_name(old[0])}"
    for path in CONF.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            target = line.partition("_target_:")[2].split("#")[0].strip()
            assert not new_name(target), f"{path.relative_to(ROOT)}: {target} is {new_name(target)}"


@pytest.mark.slow  # a subprocess that draws a report: the fast suite stays under 10 minutes
def test_python_m_report_writes_the_kept_report(tmp_path):
    kept = ROOT / "docs" / "results" / "data" / "relative_init"
    copy = shutil.copytree(kept, tmp_path / kept.name)
    result = run_module("vitlab.runs.report", str(copy))
    assert result.returncode == 0, result.stderr
    assert (copy / "report.md").read_text() == (kept / "report.md").read_text()


@pytest.mark.slow  # five subprocesses that import the stack
@pytest.mark.parametrize("name", ["vitlab.report", "vitlab.runs.results_site", "vitlab.results_site",
                                  "vitlab.runs.export", "vitlab.export"])
def test_python_m_runs_the_commands_by_either_name(name):
    """The documented commands, and the old names that scripts written earlier run."""
    result = run_module(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m vitlab.")
