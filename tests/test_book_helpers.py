"""diffusion_lib.notebook: the plumbing the chapters import instead of pasting it."""

from __future__ import annotations

import html
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_lib import notebook
from diffusion_lib.notebook import (
    animation_html,
    check_device,
    check_parameter,
    interact,
    seconds,
    show_image,
    show_source,
)


def test_importing_the_helpers_loads_no_plotting_or_notebook_package():
    code = ("import sys, diffusion_lib, diffusion_lib.notebook; print(sorted(m for m in "
            "('matplotlib', 'IPython', 'ipywidgets', 'pygments') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("value, kind, error, words", [
    ("2000", int, TypeError, "parameter n must be an int >= 100, got '2000' of type str"),
    (True, int, TypeError, "got True of type bool"),
    (1.5, int, TypeError, "of type float"),
    (50, int, ValueError, "parameter n must be an int >= 100, got 50"),
])
def test_check_parameter_raises_the_right_error_with_what_was_expected(value, kind, error,
                                                                       words):
    with pytest.raises(error) as info:
        check_parameter("n", value, kind, lambda v: v >= 100, "an int >= 100")
    assert words in str(info.value)


def test_check_parameter_accepts_good_values_and_bools_where_asked():
    assert check_parameter("n", 100, int, lambda v: v >= 100, "an int >= 100") is None
    assert check_parameter("flag", False, bool, lambda v: True, "True or False") is None
    with pytest.raises(TypeError, match="parameter flag must be True or False"):
        check_parameter("flag", 0, bool, lambda v: True, "True or False")


def test_check_device():
    check_device("cpu")
    with pytest.raises(TypeError, match="parameter device must be"):
        check_device(0)
    with pytest.raises(ValueError, match='"cpu", "cuda", "cuda:N" or "mps"'):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="PyTorch sees no GPU"):
            check_device("cuda:1")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="no Apple GPU"):
            check_device("mps")


def test_seconds_is_the_fastest_of_the_runs(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.5, 20.0, 22.0])   # runs of 3, 1.5 and 2 s
    monkeypatch.setattr(notebook.time, "perf_counter", lambda: next(clock))
    calls = []
    assert seconds(lambda: calls.append(1), repeats=3) == 1.5
    assert len(calls) == 3
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        seconds(lambda: None, repeats=0)


def test_show_image_maps_training_space_to_8_bit_pixels():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]])                  # (1, 2, 2), one clipped
    fig, ax = plt.subplots()
    show_image(ax, x, title="a")
    drawn = ax.images[0].get_array()
    assert np.array_equal(np.asarray(drawn), [[0, 128], [255, 255]])
    assert ax.get_title() == "a" and ax.get_xticks().size == 0
    colour = np.zeros((3, 4, 3), dtype=np.uint8)                    # uint8 (H, W, C)
    show_image(ax, colour)
    assert ax.images[-1].get_array().shape == (3, 4, 3)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        show_image(ax, torch.zeros(4, 4))
    plt.close(fig)


def test_show_source_is_the_library_source_folded_on_request():
    import inspect

    pytest.importorskip("IPython")
    pytest.importorskip("pygments")
    shown = show_source(seconds).data
    text = html.unescape(re.sub(r"<[^>]+>", "", shown))
    assert text.strip() == inspect.getsource(seconds).strip()
    assert "white-space: pre-wrap" in shown and "<details>" not in shown
    folded = show_source(seconds, collapsed=True).data
    assert folded.startswith("<details><summary>Source of <code>seconds</code>")
    excerpt = html.unescape(re.sub(r"<[^>]+>", "", show_source(seconds, until="best =").data))
    assert excerpt.rstrip().endswith('best = float("inf")\n    ...')
    assert "perf_counter" not in excerpt
    with pytest.raises(ValueError, match="does not occur"):
        show_source(seconds, until="no such text")


def test_animation_html_holds_every_frame_and_the_caption_and_closes_the_figure():
    matplotlib = pytest.importorskip("matplotlib")
    pytest.importorskip("IPython")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    line, = ax.plot([0, 1], [0, 0])
    drawn = []

    def draw(k):
        drawn.append(k)
        line.set_ydata([k, k])

    shown = animation_html(fig, draw, frames=[0, 1, 2], caption="three frames").data
    assert shown.startswith("<figure>") and "<figcaption>three frames</figcaption>" in shown
    assert shown.count("data:image/png;base64") == 3
    assert set(drawn) == {0, 1, 2}
    assert not plt.fignum_exists(fig.number)
    fig2, _ = plt.subplots()
    with pytest.raises(ValueError, match="at least 2 frames"):
        animation_html(fig2, draw, frames=[0], caption="")
    plt.close(fig2)


def test_interact_builds_sliders_and_buttons_or_says_what_to_install(monkeypatch, capsys):
    with pytest.raises(ValueError, match="control t"):
        interact(lambda t: None, t=(0, 10, 1, 20))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)     # as if not installed
    assert interact(lambda t: None, t=(0, 10, 1, 5)) is None
    assert "pip install ipywidgets" in capsys.readouterr().out
    monkeypatch.delitem(sys.modules, "ipywidgets")
    widgets = pytest.importorskip("ipywidgets")
    seen = []
    view = interact(lambda t, name: seen.append((t, name)), t=(0, 10, 2, 4),
                    name=["linear", "cosine"])
    slider, buttons = view.widget.children[:2]
    assert isinstance(slider, widgets.IntSlider) and not slider.continuous_update
    assert (slider.min, slider.max, slider.step, slider.value) == (0, 10, 2, 4)
    assert isinstance(buttons, widgets.ToggleButtons)
    assert list(buttons.options) == ["linear", "cosine"]
    assert seen[-1] == (4, "linear")
