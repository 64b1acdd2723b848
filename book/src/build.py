"""Author-side tool: turn the chapters' jupytext percent sources in this folder into the
book's .ipynb files in book/ (no outputs, clean metadata; ``pip install -e ".[dev]"``).

Edit a chapter here, then

    python book/src/build.py 06_reverse_process       # no name: every chapter
    python tests/test_notebooks.py --store-check-outputs book/06_reverse_process.ipynb

The second command executes the notebook and stores the printed checks of the cells
tagged nbval-check-output. The build keeps the stored text of every such cell whose
source it leaves unchanged, and names the cells that need the second command. The
committed .ipynb files are what CI, Colab and papermill run; the build keeps both in
step. _header.py is each chapter's Colab setup cell: the build fills in the repository
(``repository.url`` of _config.yml) and the library's release tag (``v`` + the
``__version__`` of diffusion_lib/__init__.py), each written in one place only.
The helpers the chapters share (parameter checks, timer, images, animations) live in
``diffusion_lib.notebook``, which the chapters import: no chapter carries a pasted copy.
"""
import pathlib
import re
import sys

import jupytext
import nbformat
import yaml

SRC = pathlib.Path(__file__).parent
DST = SRC.parent                       # book/: the committed notebooks
ROOT = DST.parent
CHECK_TAG = "nbval-check-output"

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def repository_url() -> str:
    """The book's repository: ``repository.url`` of _config.yml (also the Colab buttons')."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def library_tag() -> str:
    """The git tag of the library release the chapters install on Colab: v{__version__}."""
    init = ROOT / "diffusion_lib" / "__init__.py"
    found = re.search(r'^__version__ = "([^"]+)"$', init.read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f'{init}: expected a line __version__ = "X.Y.Z"')
    return f"v{found.group(1)}"


def header() -> str:
    """The Colab setup cell, installing diffusion_lib at its release tag."""
    text = (SRC / "_header.py").read_text().replace("@REPOSITORY_URL@", repository_url())
    return text.replace("@LIBRARY_TAG@", library_tag())


def notebook(path: pathlib.Path) -> nbformat.NotebookNode:
    """The chapter source ``path`` as a notebook without outputs."""
    text = path.read_text()
    if "# CHECK_FUNCTIONS" in text:
        raise SystemExit(f"{path.name}: the check functions are no longer pasted; import "
                         "them in the imports cell: from diffusion_lib.notebook import "
                         "check_device, check_parameter")
    text = text.replace("# %% COLAB_SETUP\n", header())
    nb = jupytext.reads(text, fmt="py:percent")
    mystnb = nb.metadata.get("mystnb")   # per-notebook MyST-NB options, e.g. execution_mode
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
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def keep_check_outputs(nb: nbformat.NotebookNode, previous: pathlib.Path) -> list[str]:
    """Copy into ``nb`` the stored text of the checked cells of ``previous`` whose source
    is unchanged; return the ids of the checked cells that have none."""
    stored = {}
    if previous.exists():
        stored = {c.source: c.outputs for c in nbformat.read(previous, as_version=4).cells
                  if CHECK_TAG in c.metadata.get("tags", []) and c.get("outputs")}
    missing = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    for count, cell in enumerate(code, 1):
        if CHECK_TAG not in cell.metadata.get("tags", []):
            continue
        if cell.source in stored:
            # as tests/test_notebooks.py --store-check-outputs writes them
            cell.outputs, cell.execution_count = stored[cell.source], count
        else:
            missing.append(cell.id)
    return missing


def build(path: pathlib.Path) -> None:
    nb = notebook(path)
    out = DST / (path.stem + ".ipynb")
    missing = keep_check_outputs(nb, out)
    nbformat.write(nb, out)
    print("wrote", out)
    if missing:
        print(f"  {len(missing)} checked cell(s) without stored text ({', '.join(missing)}): "
              f"python tests/test_notebooks.py --store-check-outputs {out.relative_to(ROOT)}")


def chapters() -> list[str]:
    """The names of the chapter sources in this folder, in order."""
    return sorted(p.stem for p in SRC.glob("*.py") if p.stem[0].isalnum() and p.stem != "build")


if __name__ == "__main__":
    for name in sys.argv[1:] or chapters():
        build(SRC / f"{name}.py")
