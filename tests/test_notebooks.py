"""The notebooks run from top to bottom, and are stored with their outputs.

Each notebook states its results as assertions in its cells, so executing it is
a test of what it claims. They run in a fresh kernel of this interpreter with
`notebooks/` as the working directory, as Jupyter would start them.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# Each notebook runs in well under a minute on two cores; a cell that takes
# longer than this is stuck, not slow.
CELL_TIMEOUT_S = 120


def test_the_seven_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["1_", "2_", "3_", "4_", "5_", "6_", "7_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_with_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert not [
        output
        for cell in code
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert any(
        "image/png" in output.get("data", {})
        for cell in code
        for output in cell.outputs
    ), "every notebook has at least one plot"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_without_error(path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
