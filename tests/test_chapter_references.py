"""Every "chapter N" in the library's docstrings and comments names a chapter of _toc.yml,
and the chapter it names really uses what the docstring is about.

The book shows docstrings (the source of q_sample_chain, for one) and a reader follows
their chapter numbers: a wrong one sends them to the wrong page. Chapter N of the book is
the notebook book/0N_*.ipynb (the preface, unnumbered, is chapter 0); _toc.yml says so.
"""

from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "diffusion_lib"
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
# "chapter 4", "chapters 6 and 7", "chapters 2 to 5", "chapters 6-8", "chapters 1, 2 and 3"
REFERENCE = re.compile(r"\b[Cc]hapters?\s+(\d+(?:\s*(?:-|–|to|and|or|,)\s*\d+)*)")

# names a docstring cites as code: ``q_sample``, :func:`q_sample`, :class:`.toys.X`
CODE = re.compile(r"``([A-Za-z_][\w.]*)(?:\(\))?``|:(?:func|class|mod|meth):`[~.]*([\w.]+)`")


def toc_files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [
            f for value in node.values() for f in toc_files(value)]
    if isinstance(node, list):
        return [f for value in node for f in toc_files(value)]
    return []


def chapter_table() -> dict[int, str]:
    """{chapter number: notebook name}, from the numbered files of _toc.yml."""
    table = {}
    for file in toc_files(TOC):
        found = re.fullmatch(r"book/(\d\d)_\w+", file)
        if found:
            table[int(found.group(1))] = file.removeprefix("book/")
    return table


CHAPTERS = chapter_table()


def numbers(text: str) -> set[int]:
    """The chapter numbers of one reference's number part: "6-8" is 6, 7 and 8."""
    found = set()
    for part in re.split(r"\s*(?:,|and|or)\s*", text):
        ends = re.split(r"\s*(?:-|–|to)\s*", part)
        if len(ends) == 2:
            found |= set(range(int(ends[0]), int(ends[1]) + 1))
        else:
            found.add(int(ends[0]))
    return found


def chapter_source(number: int) -> str:
    """A chapter's text and code: its jupytext source in book/src."""
    return (ROOT / "book" / "src" / f"{CHAPTERS[number]}.py").read_text()


def references() -> list[tuple[str, str, set[int], set[str]]]:
    """(where, text, chapters, names) for every chapter reference in the library: in a
    function's or class's docstring the names are its own (and its class's), in a
    module's docstring or a comment the module's public names and those its docstring
    cites as code (``name``, :func:`name`); for the command line, its command."""
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
            ".__init__")
        public = {n.name for n in tree.body
                  if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name[0] != "_"}
        public |= {module.rsplit(".", 1)[-1], module}
        cited = (m.group(1) or m.group(2) for m in CODE.finditer(ast.get_docstring(tree) or ""))
        public |= {name.rsplit(".", 1)[-1] for name in cited}
        if module == "diffusion_lib.cli":
            public.add("python -m diffusion_lib")

        def visit(node, owner: set[str]):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names = owner | {child.name}
                    doc = ast.get_docstring(child) or ""
                    for match in REFERENCE.finditer(doc):
                        found.append((f"{module}.{child.name}", match.group(0),
                                      numbers(match.group(1)), names))
                    visit(child, names if isinstance(child, ast.ClassDef) else owner)

        for match in REFERENCE.finditer(ast.get_docstring(tree) or ""):
            found.append((module, match.group(0), numbers(match.group(1)), public))
        visit(tree, set())
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                for match in REFERENCE.finditer(token.string):
                    found.append((f"{module}, line {token.start[0]}", match.group(0),
                                  numbers(match.group(1)), public))
    return found


REFERENCES = references()


def test_the_table_of_chapters_is_read_from_the_toc():
    assert CHAPTERS[0] == "00_how_to_read" and CHAPTERS[4] == "04_closed_form"
    assert sorted(CHAPTERS) == list(range(len(CHAPTERS))), "chapters are numbered 0, 1, 2, ..."
    assert numbers("6-8") == {6, 7, 8} and numbers("6 and 7") == {6, 7}
    assert numbers("2 to 5") == {2, 3, 4, 5} and numbers("1, 2 and 3") == {1, 2, 3}
    assert len(REFERENCES) > 20, "the library's docstrings cite chapters"


@pytest.mark.parametrize("where, text, chapters, names", REFERENCES,
                         ids=[f"{r[0]}: {r[1]}" for r in REFERENCES])
def test_a_chapter_reference_names_a_chapter_that_uses_it(where, text, chapters, names):
    missing = sorted(n for n in chapters if n not in CHAPTERS)
    assert not missing, f"{where} cites {text!r}: _toc.yml has no chapter {missing}"
    for number in chapters:
        source = chapter_source(number)
        used = sorted(n for n in names if re.search(rf"\b{re.escape(n)}\b", source))
        assert used, (f"{where} cites {text!r}, but {CHAPTERS[number]} mentions none of "
                      f"{sorted(names)}")


def test_q_sample_is_cited_with_the_closed_form_chapter():
    """The reference the issue found wrong: q_sample belongs to chapter 4, not 3."""
    cited = [r for r in REFERENCES if "q_sample_chain" in r[0]]
    assert cited and all(r[2] == {4} for r in cited), cited
