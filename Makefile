# The two commands of the README. Each creates (or reuses) .venv and installs what it
# needs: torch pinned to the CPU wheel (an unpinned torch pulls a multi-GB CUDA build),
# then this package in editable mode with its test and book extras.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= test,book
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book install clean mutation

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build .pytest_cache

# Slow: break each formula in turn and check that a test catches it (~15 min).
mutation: $(STAMP)
	$(PY) tests/mutation_check.py
