"""Plumbing the book's chapters share: parameter checks, a timer, images, library source,
an animation as HTML, and a live view with a fallback.

Nothing here is about diffusion. These helpers live once in the library so that no chapter
carries a pasted copy (the role of d2l's ``#@save`` functions); each docstring names the
chapter that introduces it. matplotlib, IPython, pygments and ipywidgets are imported
inside the functions that use them, so ``import diffusion_lib`` stays light.

    from diffusion_lib.notebook import check_device, check_parameter
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["check_parameter", "check_device", "seconds", "show_image", "show_source",
           "animation_html", "interact", "find_model"]

DEVICES = '"cpu", "cuda", "cuda:N" or "mps"'


def check_parameter(name: str, value: Any, kind: type, ok: Callable[[Any], bool],
                    expected: str) -> None:
    """Stop at once, with a clear message, if a chapter's parameter is wrong.

    The cell after each chapter's ``parameters`` cell calls it for every parameter
    (introduced in the preface, chapter 0), so that ``papermill -p num_samples ten``
    fails at the top of the notebook rather than deep inside it.

    Raises TypeError if ``value`` is not a ``kind`` (``True`` is not an int here), and
    ValueError if ``ok(value)`` is false; both messages name the parameter and say what
    was ``expected``.
    """
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise TypeError(f"parameter {name} must be {expected}, got "
                        f"{value!r} of type {type(value).__name__}")
    if not ok(value):
        raise ValueError(f"parameter {name} must be {expected}, got {value!r}")


def check_device(device: Any) -> None:
    """Check the ``device`` parameter of a chapter (chapter 0): a device name that PyTorch
    can use here, else TypeError or ValueError with what to do instead."""
    check_parameter("device", device, str,
                    lambda v: v in ("cpu", "cuda", "mps") or v.startswith("cuda:"), DEVICES)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but PyTorch sees no GPU. On Colab choose "
                         "Runtime > Change runtime type > GPU; elsewhere use 'cpu'.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but PyTorch sees no Apple GPU; use device='cpu'.")


def seconds(fn: Callable[[], Any], repeats: int = 5, device: str = "cpu") -> float:
    """The fastest of ``repeats`` runs of ``fn()``, in seconds (chapter 3 times the chain
    with it). On a CUDA ``device`` it waits for the GPU before reading the clock."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def show_image(ax, image, title: str | None = None, cmap: str = "gray_r") -> None:
    """Draw one image on a matplotlib axis, without ticks (chapter 1).

    Args:
        image: a tensor or array (C, H, W) in the training space [-1, 1], shown as the
            8-bit pixels ``round((x + 1) * 127.5)`` clipped to 0..255; or uint8 pixels
            (H, W, C) or (H, W), e.g. a dataset's ``to_output`` or an image grid.
        cmap: for one channel; the default draws dark ink on white.
    """
    pixels = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else \
        np.asarray(image)
    if pixels.dtype != np.uint8:
        if pixels.ndim != 3:
            raise ValueError(f"a float image must have shape (C, H, W), got {pixels.shape}")
        pixels = np.clip(np.round((pixels + 1) * 127.5), 0, 255).astype(np.uint8)
        pixels = pixels.transpose(1, 2, 0)                          # (H, W, C)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]                                     # (H, W)
    if pixels.ndim == 2:
        ax.imshow(pixels, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        ax.imshow(pixels, interpolation="nearest")
    else:
        raise ValueError(f"expected pixels (H, W), (H, W, 1) or (H, W, 3), got {pixels.shape}")
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)


def show_source(obj: Any, collapsed: bool = False, until: str | None = None):
    """The library's own source of ``obj`` as highlighted HTML (first in chapter 2).

    The chapters show the code they teach instead of a copy of it. Long lines wrap at
    the page's width rather than hiding behind a scroll bar. ``collapsed=True`` folds the
    code under a "Source of ..." line that a click opens; ``until`` stops after the first
    line containing that text (an excerpt, marked by "...").
    """
    import html
    import inspect

    from IPython.display import HTML
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    lines = inspect.getsource(obj).splitlines()
    if until is not None:
        end = next((i for i, line in enumerate(lines) if until in line), None)
        if end is None:
            raise ValueError(f"{until!r} does not occur in the source of {obj.__qualname__}")
        indent = len(lines[end + 1]) - len(lines[end + 1].lstrip()) if end + 1 < len(lines) \
            else 0
        lines = lines[:end + 1] + [" " * indent + "..."]
    code = highlight("\n".join(lines), PythonLexer(), HtmlFormatter(nowrap=True))
    block = ('<div class="highlight"><pre style="white-space: pre-wrap; '
             f'overflow-wrap: anywhere;">{code}</pre></div>')
    if collapsed:
        name = html.escape(obj.__qualname__)
        block = (f"<details><summary>Source of <code>{name}</code> (click to show)</summary>"
                 f"{block}</details>")
    return HTML(block)


def animation_html(fig, draw: Callable[[Any], Any], frames: Sequence, caption: str,
                   interval: int = 250):
    """A matplotlib animation as a player that runs in the browser, without a kernel
    (chapter 1).

    ``draw(frame)`` updates ``fig`` for each item of ``frames``;
    ``FuncAnimation.to_jshtml`` renders every frame to a PNG at the figure's dpi, and the
    figure is then closed (it would otherwise show once more, still). Returns an IPython
    HTML object: the player and its ``caption`` in one ``<figure>``.
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib import animation

    if len(frames) < 2:
        raise ValueError(f"an animation needs at least 2 frames, got {len(frames)}")
    movie = animation.FuncAnimation(fig, draw, frames=frames, interval=interval)
    player = movie.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(f"<figure>{player}<figcaption>{caption}</figcaption></figure>")


# Where the book's released models are, seen from where a chapter runs: book/ (Jupyter,
# the book build, Colab after its setup cell), the repository root (papermill book/X.ipynb).
MODEL_FOLDERS = ("models", "book/models", "../book/models")


def find_model(name: str, models_dir: str | Path = "") -> Path:
    """The folder of the released model ``name`` (book/models/<name>, chapter 7).

    ``models_dir`` (a chapter's parameter) is looked in first; then ``MODEL_FOLDERS``,
    relative to the working directory. Raises FileNotFoundError naming the places
    looked in and how to get the models: they ship with the book's repository.
    """
    where = ([Path(models_dir)] if str(models_dir) else []) + [Path(p) for p in MODEL_FOLDERS]
    for folder in where:
        if (folder / name / "MANIFEST.json").is_file():
            return folder / name
    looked = ", ".join(str((folder / name).resolve()) for folder in where)
    raise FileNotFoundError(f"no released model {name!r} in {looked}; the models ship in "
                            f"the book's repository (book/models/): run the chapter from a "
                            f"clone, or set models_dir to its book/models folder")


def interact(function: Callable[..., Any], **controls):
    """Redraw ``function(**values)`` from widgets where a kernel runs (Jupyter, Colab);
    chapter 2 introduces it. The book's web pages have no kernel: the cells that call it
    are tagged ``remove-cell``.

    Each control is ``(min, max, step, value)`` of ints (a slider that redraws when
    released) or a list of strings (buttons). Without ipywidgets it prints how to get it
    and returns None; else it returns ``ipywidgets.interact``'s result.
    """
    built = {}
    for name, spec in controls.items():
        if isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec):
            built[name] = ("buttons", spec)
        elif (isinstance(spec, tuple) and len(spec) == 4
              and all(isinstance(v, int) and not isinstance(v, bool) for v in spec)
              and spec[0] <= spec[3] <= spec[1] and spec[2] > 0):
            built[name] = ("slider", spec)
        else:
            raise ValueError(f"control {name}: expected (min, max, step, value) ints with "
                             f"min <= value <= max, or a list of strings, got {spec!r}")
    try:
        import ipywidgets as widgets
    except ImportError:
        print("pip install ipywidgets for the interactive version")
        return None
    for name, (kind, spec) in built.items():
        if kind == "buttons":
            built[name] = widgets.ToggleButtons(options=spec, description=name)
        else:
            low, high, step, value = spec
            built[name] = widgets.IntSlider(value=value, min=low, max=high, step=step,
                                            description=name, continuous_update=False)
    return widgets.interact(function, **built)
