"""Every course notebook is stored clean and runs top to bottom.

Each ``notebooks/**/*.ipynb`` is executed in a fresh kernel with ``LLM_COURSE_SMOKE=1`` (a notebook
reads it to shrink its sizes) and a wall-clock limit for the whole notebook. ``make notebooks`` passes
``--full-size`` to run them as a student would on a GPU. A notebook stored with outputs or execution
counts fails: outputs belong to the reader's run, not to the repository.
"""

import asyncio
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
SMOKE_TIMEOUT_S = 300
FULL_TIMEOUT_S = 4 * 3600


def notebook_id(path):
    return str(path.relative_to(ROOT / "notebooks"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: code cells {dirty} are stored with outputs or execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_runs_top_to_bottom(path, request, monkeypatch):
    full_size = request.config.getoption("--full-size")
    monkeypatch.setenv("LLM_COURSE_SMOKE", "0" if full_size else "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    limit = FULL_TIMEOUT_S if full_size else SMOKE_TIMEOUT_S
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=limit, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(), timeout=limit))
    except asyncio.TimeoutError:
        pytest.fail(f"{path.name} did not finish within {limit} s")
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
