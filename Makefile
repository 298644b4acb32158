# Two commands do all the set-up on a fresh machine (Python 3.10+, gcc, the Python headers):
#
#   make demo    the main job: diagnose io_uring here, then an echo on io_uring vs Trio's epoll
#   make test    lint (mypy, ruff) and the docs (-W), then our tests and Trio's own
#                test suite, on the io_uring backend
#
# Both create .venv and install trio_uring into it (pip compiles the C ring layer).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-ours test-trio mutate sanitize clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py trio_uring/_ring.c trio_uring/_ring.h trio_uring/_ring_build.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) -m trio_uring

test: lint docs test-ours test-trio mutate sanitize

test-ours: setup
	$(PY) -m pytest

test-trio: setup
	$(PY) tests/trio_suite/run.py

# The mutation run: plausible bugs planted one at a time (tools/mutations.toml);
# each must be caught by the tests. Prints the score; fails on a survivor.
mutate: setup
	$(PY) tools/mutate.py

# Our tests against an AddressSanitizer + UBSan build of the C layer.
sanitize: setup
	tools/sanitize.sh

clean:
	rm -rf $(VENV) build *.egg-info trio_uring/*.so trio_uring/_ring_cffi.c

# The documentation (Sphinx, docs/source -> docs/_build/html); warnings are errors.
.PHONY: docs

docs: $(VENV)/.docs-installed
	$(VENV)/bin/sphinx-build -W -b html docs/source docs/_build/html

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

# Type checking (mypy --strict on the package) and linting (ruff check): `make lint`.
.PHONY: lint

LINTED := trio_uring tests examples benchmarks tools

lint: $(VENV)/.lint-installed
	$(PY) -m mypy trio_uring
	$(PY) -m ruff check $(LINTED)

$(VENV)/.lint-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[lint]'
	touch $@
