# Two commands do all the set-up on a fresh machine (Python 3.10+, gcc, the Python headers):
#
#   make demo    the main job: diagnose io_uring here, then an echo on io_uring vs Trio's epoll
#   make test    lint (mypy, ruff) and the docs (-W), then our tests and Trio's own
#                test suite, on the io_uring backend; then our tests on the oldest
#                Trio we support
#
# Both create .venv and install trio_uring into it (pip compiles the C ring layer).
# `make wheel` builds what we ship into dist/: the sdist and a manylinux wheel.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-ours test-trio test-oldest-trio mutate sanitize wheel clean

setup: $(VENV)/.installed

# Each step says what it does before it starts (pip's own output is kept quiet with -q).
$(VENV)/.installed: pyproject.toml setup.py trio_uring/_ring.c trio_uring/_ring.h trio_uring/_ring_build.py
	@test -x $(PY) || { echo "==> Creating $(VENV) (a virtual environment for trio_uring) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "==> Upgrading pip in $(VENV) ..."
	@$(PY) -m pip install -q --upgrade pip
	@echo "==> Installing trio_uring into $(VENV), with Trio and the test tools; gcc compiles the C ring layer (~20 s) ..."
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@
	@echo "==> $(VENV) is ready."

# The check (can io_uring be used here?), then the echo comparison (~20 s).
demo: setup
	@echo "==> python -m trio_uring check"
	@$(PY) -m trio_uring check
	@echo
	@echo "==> python -m trio_uring demo"
	@$(PY) -m trio_uring demo

test: lint docs test-ours test-trio test-oldest-trio mutate sanitize

# (tests/test_typing.py runs mypy, from the lint tools.)
test-ours: setup $(VENV)/.lint-installed
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
	rm -rf $(VENV) $(OLDEST_VENV) build dist *.egg-info trio_uring/*.so trio_uring/_ring_cffi.c

# What trio_uring ships, in dist/: the sdist and a manylinux wheel (cp310-abi3) that
# installs without a compiler (tools/build_dist.py: python -m build, auditwheel repair).
wheel: setup
	$(PY) tools/build_dist.py dist

# Our tests on the oldest Trio we support (the lower bound of the trio dependency,
# OLDEST_TRIO in trio_uring/_trio_contract.py), in a venv of its own: about 70 s
# with the venv to make, 45 s after. The packaging tests do not depend on the
# Trio installed here (their fresh venv gets the newest), so they run only once.
OLDEST_TRIO = $(shell sed -n 's/^OLDEST_TRIO: Final = "\(.*\)"/\1/p' trio_uring/_trio_contract.py)
OLDEST_VENV := .venv-oldest-trio

test-oldest-trio: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest --ignore=tests/test_packaging.py

$(OLDEST_VENV)/.installed: pyproject.toml setup.py trio_uring/_ring.c trio_uring/_ring.h trio_uring/_ring_build.py trio_uring/_trio_contract.py
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -e '.[test,lint]' 'trio==$(OLDEST_TRIO)'
	touch $@

# The documentation (Sphinx, docs/source -> docs/_build/html); warnings are errors.
.PHONY: docs

docs: $(VENV)/.docs-installed
	$(VENV)/bin/sphinx-build -W -b html docs/source docs/_build/html

$(VENV)/.docs-installed: $(VENV)/.installed
	@echo "==> Installing Sphinx into $(VENV) ..."
	@$(PY) -m pip install -q -e '.[docs]'
	@touch $@

# Type checking (mypy --strict on the package) and linting (ruff check): `make lint`.
.PHONY: lint

LINTED := trio_uring tests examples benchmarks tools

lint: $(VENV)/.lint-installed
	$(PY) -m mypy trio_uring
	$(PY) -m ruff check $(LINTED)

$(VENV)/.lint-installed: $(VENV)/.installed
	@echo "==> Installing mypy and ruff into $(VENV) ..."
	@$(PY) -m pip install -q -e '.[lint]'
	@touch $@
