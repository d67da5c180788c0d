"""The modules' old names, before the layout grouped them into objectives/, runs/, training/ and
bench/: each still imports, as the very module object of its new name (not a copy).

Run folders written earlier name their classes by the old paths (`.hydra/config.yaml`:
`_target_: vitlab.module.ImageClassifier`), so may pickles inside checkpoints, and scripts may
run `python -m vitlab.report`. A finder on `sys.meta_path` answers every old name (and any name
under it, `vitlab.export.timm`) with the module of its new one; `python -m` with an old name
runs the new module as `__main__`. No file is left at an old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "vitlab.base_module": "vitlab.objectives.base_module",
    "vitlab.module": "vitlab.objectives.module",
    "vitlab.mae_module": "vitlab.objectives.mae_module",
    "vitlab.distill": "vitlab.objectives.distill",
    "vitlab.optim": "vitlab.objectives.optim",
    "vitlab.metrics": "vitlab.objectives.metrics",
    "vitlab.run_folder": "vitlab.runs.run_folder",
    "vitlab.summary": "vitlab.runs.summary",
    "vitlab.build_model": "vitlab.runs.build_model",
    "vitlab.trained": "vitlab.runs.trained",
    "vitlab.predict": "vitlab.runs.predict",
    "vitlab.export": "vitlab.runs.export",
    "vitlab.report": "vitlab.runs.report",
    "vitlab.report_probes": "vitlab.runs.report_probes",
    "vitlab.answers": "vitlab.runs.answers",
    "vitlab.results_site": "vitlab.runs.results_site",
    "vitlab.analysis.runs": "vitlab.runs.notebook",
    "vitlab.train": "vitlab.training.train",
    "vitlab.evaluate": "vitlab.training.evaluate",
    "vitlab.config_checks": "vitlab.training.config_checks",
    "vitlab.distributed": "vitlab.training.distributed",
    "vitlab.study_plan": "vitlab.training.study_plan",
    "vitlab.fp8": "vitlab.training.fp8",
    "vitlab.loggers": "vitlab.training.loggers",
    "vitlab.csv_logger": "vitlab.training.csv_logger",
    "vitlab.bench_fit": "vitlab.bench.fit",
    "vitlab.bench_path": "vitlab.bench.path",
}


def new_name(name: str) -> str | None:
    """The module's name today, for an old name or a name under one; None for any other."""
    head = name
    while "." in head:
        if head in MOVED:
            return MOVED[head] + name[len(head):]
        head = head.rpartition(".")[0]
    return None


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module of its new name; the module keeps its own spec."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # the import system set the old name's spec on it

    def get_code(self, name: str):
        """What `python -m <old name>` runs: the new module, as `__main__`."""
        return compile(f"import runpy\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{name}: moved to {self.new}>", "exec")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path=None, target=None):
        new = new_name(name) if name.startswith("vitlab.") else None
        return importlib.util.spec_from_loader(name, _Alias(new)) if new else None


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
