"""The chapters as a reader meets them: nothing cut off at the right, exercises with solutions.

* The rendered content column shows about 80 characters of code, so every line of a code
  cell, of a fenced code block in the text, and of a stored printed check is at most 80
  characters (the browser test, tests/browser, measures the rendered widths).
* Chapters 1 to 10 end with 2 to 4 exercises each, at least 25 in all. Each exercise is
  a paragraph starting ``**Exercise N.k**``; its solution is hidden in the rendered book
  until the reader opens it: a dropdown admonition for text, code cells tagged
  ``hide-cell`` whose asserts run in CI like the rest of the chapter.
"""

from __future__ import annotations

import pathlib
import re

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"(0[1-9]|10)_", p.name)]
MAX_CODE = 80
EXERCISE = re.compile(r"^\*\*Exercise (\d+)\.(\d+)\*\*", re.MULTILINE)
SOLUTION = re.compile(r"^```\{admonition\} Solution[^\n]*\n:class: dropdown", re.MULTILINE)


def read(path):
    return nbformat.read(path, as_version=4)


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def fenced_lines(markdown: str) -> list[str]:
    """The lines of the fenced code blocks (```bash ...) of a markdown cell; MyST
    directives (```{admonition}) are text, not code."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fenced = not fenced and not stripped.startswith("```{")
        elif fenced:
            lines.append(line)
    return lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_code_line_is_wider_than_the_page(path):
    too_long = []
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            lines = cell.source.splitlines()
            lines += [line for out in cell.get("outputs", []) if out.get("name") == "stdout"
                      for line in out.text.splitlines()]
        else:
            lines = fenced_lines(cell.source)
        too_long += [f"cell {i}: {line}" for line in lines if len(line) > MAX_CODE]
    assert not too_long, (f"{len(too_long)} line(s) over {MAX_CODE} characters:\n"
                          + "\n".join(too_long))


def exercises(nb) -> dict[str, dict]:
    """{"N.k": {"text": ..., "solutions": number of dropdown solutions, "code": [cells]}}
    for the exercises of a notebook, each with the cells up to the next exercise."""
    found, current = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for part in re.split(r"(?=^\*\*Exercise \d+\.\d+\*\*)", cell.source,
                                 flags=re.MULTILINE):
                match = EXERCISE.match(part)
                if match:
                    current = found.setdefault(f"{match[1]}.{match[2]}",
                                               {"text": part, "solutions": 0, "code": []})
                if current is not None:
                    current["solutions"] += len(SOLUTION.findall(part))
        elif current is not None:
            current["code"].append(cell)
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_ends_with_exercises_whose_solutions_are_hidden_and_checked(path):
    nb = read(path)
    number = int(path.name[:2])
    found = exercises(nb)
    assert 2 <= len(found) <= 4, f"{path.name}: {len(found)} exercises, expected 2 to 4"
    assert list(found) == [f"{number}.{k}" for k in range(1, len(found) + 1)], \
        f"exercises of chapter {number} are numbered {number}.1, {number}.2, ...: {list(found)}"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"
                and re.search(r"^## Exercises$", c.source, re.MULTILINE)]
    assert len(headings) == 1, "one '## Exercises' section"
    for name, exercise in found.items():
        assert exercise["solutions"] or exercise["code"], f"exercise {name} has no solution"
        for cell in exercise["code"]:
            assert "hide-cell" in tags(cell), \
                f"exercise {name}: a solution cell must be tagged hide-cell (hidden)"
            assert re.search(r"^\s*assert\b", cell.source, re.MULTILINE), \
                f"exercise {name}: a solution's code asserts what it shows"


def test_the_book_has_at_least_25_exercises_in_chapters_1_to_8():
    counts = {p.stem: len(exercises(read(p))) for p in CHAPTERS if int(p.name[:2]) <= 8}
    assert sum(counts.values()) >= 25, counts
