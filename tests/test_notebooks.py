"""Every notebook executes top to bottom (outputs are stripped in git)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


# Notebooks that analyse a run directory read it from this variable; the smoke run serves.
RUN_DIR_NOTEBOOKS = {"pseudo_label_analysis"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, cache_dir: Path, request, monkeypatch) -> None:
    if path.stem in RUN_DIR_NOTEBOOKS:
        monkeypatch.setenv("LABELMATCH_RUN_DIR", str(request.getfixturevalue("smoke_run")))
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name}: strip outputs before committing"
    )
    NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    images = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs if "image/png" in output.get("data", {})
    ]  # fmt: skip
    assert images, f"{path.name} drew no figure"
