"""Every module of vitlab imports with the installed versions (pyproject.toml's floors are what
the code was tested with: a module that needs a newer library fails here, not in a user's run)."""

import importlib
import pkgutil

import pytest

import vitlab


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.walk_packages(vitlab.__path__, "vitlab.")))
def test_every_module_imports(name):
    importlib.import_module(name)  # optional extras (torchao, litdata, onnx) are imported lazily
