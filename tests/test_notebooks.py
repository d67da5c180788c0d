"""The notebooks run top to bottom on a tiny run and sweep, and are stored without outputs."""

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, run_entry
from nbclient import NotebookClient
from test_report import done, make_job

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """A sweep folder: one real (tiny) run as job 0, plus synthetic jobs over a data fraction."""
    sweep = tmp_path_factory.mktemp("nb") / "sweep"
    overrides = ["model.depth=1", "data.train_fraction=0.1", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={sweep / '0'}"]
    result = run_entry("train.py", overrides, cwd=sweep.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    for i, frac in enumerate(["0.1", "1.0", "1.0"], 1):
        make_job(sweep, i, ["model.depth=1", f"data.train_fraction={frac}"], done(0.5 + 0.1 * i))
    return sweep


def test_notebooks_are_stored_without_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"positional_embeddings.ipynb", "study_analysis.ipynb"}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tiny_sweep, monkeypatch, tmp_path):
    monkeypatch.setenv("VITLAB_RUN", str(tiny_sweep / "0"))
    monkeypatch.setenv("VITLAB_SWEEP", str(tiny_sweep))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, "the notebook shows no figure"
