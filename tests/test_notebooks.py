"""The book's notebooks: structure (fast) and a papermill run of each with book/params/ci.yml.

`make test` also runs every notebook with nbval (`pytest --nbval-lax book/`), which
compares the printed checks of the cells tagged ``nbval-check-output`` with the text
stored in those cells -- the only outputs a committed notebook may hold. After changing
such a cell, refresh the stored text with

    .venv/bin/python tests/test_notebooks.py --store-check-outputs [book/NN_name.ipynb ...]
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CI_PARAMS = yaml.safe_load((BOOK / "params" / "ci.yml").read_text())
GPU_PARAMS = yaml.safe_load((BOOK / "params" / "gpu.yml").read_text())

ALLOWED_TAGS = {"parameters", "remove-cell", "hide-input", "hide-cell", "nbval-ignore-output",
                "nbval-check-output"}
# The parameter names shared by every chapter, with their types: one papermill
# parameter file then works for the whole book.
SHARED_PARAMETERS = {"seed": int, "device": str, "dataset": str, "download": bool,
                     "num_samples": int, "train_steps": int, "batch_size": int,
                     # chapters 7-9, the shipped MNIST model (book/models/)
                     "models_dir": str, "guidance": float, "model_samples": int}
KERNEL_TIMEOUT_S = 600


def ids(paths):
    return [p.stem for p in paths]


def read(path: pathlib.Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def toc_files(node) -> list[str]:
    """Every `file:` entry of the table of contents, in order."""
    found = []
    if isinstance(node, dict):
        if "file" in node:
            found.append(node["file"])
        for value in node.values():
            found += toc_files(value)
    elif isinstance(node, list):
        for value in node:
            found += toc_files(value)
    return found


def parameters_of(nb) -> dict:
    """The names and literal values of the notebook's parameters cell."""
    cell = next(c for c in nb.cells if "parameters" in tags(c))
    values = {}
    for stmt in ast.parse(cell.source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, \
            f"the parameters cell may only hold `name = literal` lines, found {ast.unparse(stmt)}"
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    return values


def markdown_headings(nb, level: int) -> list[str]:
    """Headings of the given level in markdown cells, outside code fences."""
    found, prefix = [], "#" * level + " "
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            elif not fenced and line.startswith(prefix):
                found.append(line)
    return found


# ------------------------------------------------------------------ the book as a whole

def test_book_has_notebooks():
    assert len(NOTEBOOKS) >= 6


def test_toc_and_notebooks_agree():
    assert TOC["root"] == "book/index"
    listed = toc_files(TOC)
    assert len(listed) == len(set(listed)), "a file appears twice in _toc.yml"
    on_disk = {f"book/{p.stem}" for p in NOTEBOOKS}
    assert set(listed) == on_disk, (f"in _toc.yml but not in book/: {set(listed) - on_disk}; "
                                    f"in book/ but not in _toc.yml: {on_disk - set(listed)}")
    assert listed == sorted(listed), "chapters are listed in the order of their numbers"


def test_config_builds_colab_links_from_the_repository():
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert CONFIG["repository"]["branch"] == "main"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["execute"]["execute_notebooks"] == "cache"


@pytest.mark.parametrize("params, name", [(CI_PARAMS, "ci.yml"), (GPU_PARAMS, "gpu.yml")])
def test_parameter_files_use_the_shared_names(params, name):
    for key, value in params.items():
        assert key in SHARED_PARAMETERS, f"{name}: unknown parameter {key}"
        kind = SHARED_PARAMETERS[key]
        assert isinstance(value, kind) and (kind is bool or not isinstance(value, bool)), \
            f"{name}: {key} must be {kind.__name__}, got {value!r}"
    assert GPU_PARAMS["device"] == "cuda" and CI_PARAMS["device"] == "cpu"


# ------------------------------------------------------------------ each notebook

@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_valid_and_clean(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        unknown = set(tags(cell)) - ALLOWED_TAGS
        assert not unknown, f"cell {i}: unknown tags {unknown}"
        if cell.cell_type != "code":
            continue
        assert "NBVAL_" not in cell.source, f"cell {i}: use tags, not comment markers"
        # plain Python: no ! or % magics, which papermill and nbval run outside IPython
        ast.parse(cell.source)
        if "nbval-check-output" in tags(cell):
            # nbval compares only cells that were run: the reference has a count and text
            assert cell.outputs and cell.execution_count, \
                f"cell {i} is tagged nbval-check-output but stores no reference text"
            assert all(o.output_type == "stream" and o.name == "stdout" for o in cell.outputs), \
                f"cell {i}: reference outputs must be printed text"
        else:
            assert not cell.outputs, f"cell {i} has stored outputs: commit notebooks without them"
            assert cell.execution_count is None, f"cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_opens_with_title_colab_imports_parameters_check(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "cell 0: the title"
    assert len(markdown_headings(nb, 1)) == 1, "exactly one level-1 heading: the title"

    colab, imports, params, check = code_cells(nb)[:4]
    assert nb.cells[1] is colab, "cell 1: the Colab setup"
    assert tags(colab) == ["remove-cell"]
    assert f'REPO_URL = "{CONFIG["repository"]["url"]}"' in colab.source
    assert 'REPO_REF = "v' in colab.source   # the release tag: tests/test_colab.py
    assert 'if "google.colab" in sys.modules:' in colab.source

    assert "import diffusion_lib as dl" in imports.source
    assert all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in ast.parse(imports.source).body)

    assert sum("parameters" in tags(c) for c in nb.cells) == 1, "exactly one parameters cell"
    assert tags(params) == ["parameters"]
    values = parameters_of(nb)
    assert {"seed", "device"} <= set(values)
    for name, value in values.items():
        assert name in SHARED_PARAMETERS, f"parameter {name} is not one of the shared names"
        assert type(value) is SHARED_PARAMETERS[name], f"parameter {name} = {value!r}"
    assert values["device"] == "cpu", "the defaults run on a CPU"

    for name in values:
        assert re.search(rf"check_\w+\(\s*(\"{name}\", )?{name}\b", check.source), \
            f"the cell after the parameters does not check {name}"


# ------------------------------------------------------------------ execution

@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_with_ci_parameters(path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    # The chapters use small tensors: one thread each avoids oversubscribing shared cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=CI_PARAMS,
                               kernel_name="python3", cwd=str(BOOK), progress_bar=False,
                               execution_timeout=KERNEL_TIMEOUT_S)


@pytest.mark.slow
def test_a_wrong_parameter_type_stops_the_notebook_at_once(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = BOOK / "02_forward_process.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(path), str(tmp_path / path.name),
                                   parameters={"num_samples": "2000"}, kernel_name="python3",
                                   cwd=str(BOOK), progress_bar=False)
    assert info.value.ename == "TypeError"
    assert "parameter num_samples must be an int" in info.value.evalue
    # it failed in the check cell, right after the parameters (papermill adds one cell)
    assert info.value.exec_count <= 6


# ------------------------------------------------------------------ maintenance

def store_check_outputs(paths: list[pathlib.Path]) -> None:
    """Execute each notebook and store, in it, the printed text of its nbval-check-output cells."""
    import os

    from nbclient import NotebookClient

    os.environ["OMP_NUM_THREADS"] = "1"
    for path in paths:
        nb = read(path)
        executed = read(path)
        NotebookClient(executed, timeout=KERNEL_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(BOOK)}}).execute()
        for count, (cell, run) in enumerate(zip(code_cells(nb), code_cells(executed)), 1):
            cell.execution_count = None
            cell.outputs = []
            if "nbval-check-output" in tags(cell):
                text = "".join(o.text for o in run.outputs
                               if o.output_type == "stream" and o.name == "stdout")
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
                cell.execution_count = count
        nbformat.write(nb, path)
        print("stored check outputs in", path.relative_to(ROOT))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "--store-check-outputs":
        sys.exit(__doc__)
    store_check_outputs([pathlib.Path(p).resolve() for p in sys.argv[2:]] or NOTEBOOKS)
