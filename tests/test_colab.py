"""On Colab every chapter clones the book's repository (``repository.url`` of _config.yml,
which also makes the Colab buttons) at the library's release tag ``v{diffusion_lib.__version__}``
(the released models of book/models/ come with it), installs diffusion_lib from the clone
and works in its book/ folder; book/src/build.py writes that cell into each notebook."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import nbformat
import pytest
import yaml

import diffusion_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
TAG = f"v{diffusion_lib.__version__}"


def colab_cell_calls(source: str, monkeypatch, on_colab: bool) -> list[tuple]:
    """Run a Colab set-up cell with subprocess.run recorded instead of run: its calls."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append((("chdir", path), {})))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<colab cell>", "exec"), {})
    return calls


def test_the_repository_and_tag_are_well_formed():
    assert REPO_URL.startswith("https://github.com/") and not REPO_URL.endswith((".git", "/"))
    assert TAG.count(".") == 2 and all(p.isdigit() for p in TAG[1:].split("."))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_installs_the_release_tag_from_the_configured_repository(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[1]
    assert cell.cell_type == "code" and cell.metadata.get("tags") == ["remove-cell"]

    monkeypatch.setattr(os.path, "isdir", lambda path: False)        # no clone there yet
    clone, install, chdir = colab_cell_calls(cell.source, monkeypatch, on_colab=True)
    git = clone[0][0]
    assert git[:6] == ["git", "clone", "-q", "--depth", "1", "--branch"] and clone[1] == {
        "check": True}
    assert git[6:8] == [TAG, REPO_URL]
    command = install[0][0]
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"] and len(command) == 6
    assert install[1] == {"check": True}
    assert command[5] == f"{git[8]}[book]"          # the clone, with the book's extras
    assert chdir[0] == ("chdir", f"{git[8]}/book")

    assert colab_cell_calls(cell.source, monkeypatch, on_colab=False) == [], \
        "outside Colab the cell installs nothing"
    others = [i for i, c in enumerate(nb.cells) if i != 1 and c.cell_type == "code"
              and ("subprocess" in c.source or "git+" in c.source or "chdir" in c.source)]
    assert not others, f"cells {others} may install packages: only cell 1 does"


def load_build_script():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "src" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_script_reads_the_repository_and_the_version_from_their_one_place():
    pytest.importorskip("jupytext")
    build = load_build_script()
    assert build.repository_url() == REPO_URL
    assert build.library_tag() == TAG
    header = build.header()
    assert f'REPO_URL = "{REPO_URL}"' in header and f'REPO_REF = "{TAG}"' in header
    assert "@" + "REPOSITORY_URL@" not in header and "@" + "LIBRARY_TAG@" not in header


def test_committed_notebooks_are_their_sources_built():
    pytest.importorskip("jupytext")
    build = load_build_script()
    assert set(build.chapters()) == {p.stem for p in NOTEBOOKS}, \
        "every notebook in book/ has its source in book/src/ and the reverse"
    for name in build.chapters():
        built = build.notebook(build.SRC / f"{name}.py")
        missing = build.keep_check_outputs(built, build.DST / f"{name}.ipynb")
        assert not missing, f"{name}: checked cells {missing} store no text"
        committed = nbformat.read(build.DST / f"{name}.ipynb", as_version=4)
        assert built.metadata == committed.metadata, name
        assert len(built.cells) == len(committed.cells), \
            f"{name}: rebuild it with python book/src/build.py {name}"
        for new, old in zip(built.cells, committed.cells):
            assert new == old, f"{name}, cell {old.get('id')}: rebuild it with book/src/build.py"
