"""The equations appendix (book/appendix_equations.ipynb) cannot rot.

Its table maps every equation of the book to the diffusion_lib function that implements
it and the test that checks it. The list lives in the notebook as a literal
(``EQUATIONS = [...]``); these tests read it from there and check that every function
exists, that every named test exists and uses the function (in its body or in a fixture
it takes), and that the chapters the rows name are chapters of the book.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "appendix_equations.ipynb"


def equations() -> list[tuple]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for stmt in ast.parse(cell.source).body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and getattr(stmt.targets[0], "id", None) == "EQUATIONS"):
                return ast.literal_eval(stmt.value)
    raise AssertionError(f"{NOTEBOOK.name} has no `EQUATIONS = [...]` literal")


def resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def names_used_by_test(test_id: str) -> set[str]:
    """Names and attributes mentioned by a test function and the fixtures of its module it takes."""
    file, name = test_id.split("::")
    tree = ast.parse((ROOT / file).read_text())
    functions = {n.name: n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert name in functions, f"{test_id}: no such test"
    node = functions[name]
    used = set()
    for body in [node] + [functions[a.arg] for a in node.args.args if a.arg in functions]:
        for n in ast.walk(body):
            if isinstance(n, ast.Name):
                used.add(n.id)
            elif isinstance(n, ast.Attribute):
                used.add(n.attr)
    return used


ROWS = equations()


def test_the_table_is_not_empty_and_covers_the_chapters():
    assert len(ROWS) >= 30
    chapters = {row[0] for row in ROWS}
    on_disk = {int(p.name[:2]) for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    assert chapters <= on_disk, f"rows name chapters that do not exist: {chapters - on_disk}"
    assert set(range(2, 9)) <= chapters, "chapters 2-8 each have equations in the table"
    for row in ROWS:
        assert len(row) == 5 and all(isinstance(v, str) for v in row[1:]), row


@pytest.mark.parametrize("row", ROWS, ids=[f"{r[0]}-{r[3].rsplit('.', 1)[1]}" for r in ROWS])
def test_function_exists_and_its_test_uses_it(row):
    chapter, latex, source, function, test = row
    obj = resolve(function)
    assert callable(obj), f"{function} is not callable"
    assert test.startswith("tests/test_") and "::" in test, test
    name = function.rsplit(".", 1)[1]
    assert name in names_used_by_test(test), f"{test} does not use {name}"


def test_the_checker_can_fail():
    """A made-up function and a test that does not use it are both caught."""
    with pytest.raises((ImportError, AttributeError)):
        resolve("diffusion_lib.forward.q_sample_that_does_not_exist")
    assert "ddim_step" not in names_used_by_test(
        "tests/test_forward.py::test_q_sample_formula_with_given_noise")
    with pytest.raises(AssertionError, match="no such test"):
        names_used_by_test("tests/test_forward.py::test_that_does_not_exist")
