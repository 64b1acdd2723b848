"""Author-side tool: turn the chapters' jupytext percent sources in this folder into the
book's .ipynb files in book/ (no outputs, clean metadata; ``pip install -e ".[dev]"``).

Edit a chapter here, then

    python book/src/build.py 06_reverse_process       # no name: every chapter
    python tests/test_notebooks.py --store-check-outputs book/06_reverse_process.ipynb

The second command executes the notebook and stores the printed checks of the cells
tagged nbval-check-output. The committed .ipynb files are what CI, Colab and papermill
run; the build keeps both in step (_header.py is each chapter's Colab setup cell,
_check.py its parameter checks).
"""
import pathlib
import sys

import jupytext
import nbformat

SRC = pathlib.Path(__file__).parent
DST = SRC.parent                       # book/: the committed notebooks
HEADER = (SRC / "_header.py").read_text()
CHECK = (SRC / "_check.py").read_text()

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def build(path: pathlib.Path) -> None:
    text = path.read_text().replace("# %% COLAB_SETUP\n", HEADER).replace("# CHECK_FUNCTIONS\n", CHECK)
    nb = jupytext.reads(text, fmt="py:percent")
    mystnb = nb.metadata.get("mystnb")              # per-notebook MyST-NB options, e.g. execution_mode
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    if mystnb:
        nb.metadata["mystnb"] = mystnb
    for cell in nb.cells:
        # keep only tags and MyST-NB render options (alt text of image outputs)
        cell.metadata = {k: cell.metadata[k] for k in ("tags", "mystnb") if cell.metadata.get(k)}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.pop("id", None)
    nb.nbformat, nb.nbformat_minor = 4, 5
    for cell in nb.cells:
        cell["id"] = f"{path.stem[:2]}-{nb.cells.index(cell):02d}"
    nbformat.validate(nb)
    out = DST / (path.stem + ".ipynb")
    nbformat.write(nb, out)
    print("wrote", out)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in SRC.glob("*.py")
                                   if p.stem[0].isalnum() and p.stem != "build")
    for name in names:
        build(SRC / f"{name}.py")
