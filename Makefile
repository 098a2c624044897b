# The course's commands. `make lab` to learn, `make test` to check everything.
# Both create .venv (Python 3.10-3.13) and install the pinned requirements on first use.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first Python 3.10-3.13 on PATH; override with `make lab PYTHON=/path/to/python3.12`.
PYTHON ?= $(shell for p in python3.12 python3.11 python3.13 python3.10 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null \
	&& echo $$p && break; done)
# JupyterLab's address: localhost only, token kept on.
LAB_PORT ?= 8888
# The folder JupyterLab opens (the browser test gives it a temporary copy of notebooks/).
LAB_DIR ?= notebooks
# Jupyter refuses to run as root unless told; containers and cloud workspaces often are root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k export"`.
PYTEST_ARGS ?=
# `make wheelhouse`: the folder it fills, and the learners' platforms and Python (default: this
# machine's). Example for a mixed room: PLATFORMS="manylinux2014_x86_64 macosx_12_0_arm64 win_amd64"
WHEELHOUSE ?= wheelhouse
PLATFORMS ?=
PY_VERSION ?=
# `make install FROM=/media/usb/wheelhouse` installs from that folder only, with no index.
FROM ?=
PIP_SOURCE := $(if $(FROM),--no-index --find-links $(FROM))

.PHONY: lab test test-fast test-nbval test-loaded install check bench wheelhouse clean help

help:
	@echo "make lab      start JupyterLab on the notebooks (installs on first use)"
	@echo "make test     run the whole test suite: lint, unit tests, server conformance, notebooks"
	@echo "make test-fast   unit and server tests only (no notebooks, browser or offline install)"
	@echo "make test-nbval  every notebook through nbval (the output check, without a browser)"
	@echo "make test-loaded the notebook and timing-sensitive tests, RUNS times, beside two busy processes"
	@echo "make check    pre-flight check of this machine (instructors: run it on every laptop)"
	@echo "make bench    measure the embedded server (latency, throughput, cold start)"
	@echo "make wheelhouse  every pinned package in ./wheelhouse, for installing without internet"
	@echo "make install  create .venv and install the pinned requirements"
	@echo "make clean    remove .venv, caches and exported models"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml helpers/kernel.py
	@if [ -z "$(PYTHON)" ]; then \
		echo "No Python 3.10-3.13 found on PATH: install one, or run make PYTHON=/path/to/python3.12 ..." >&2; exit 1; fi
	@echo "Setting up $(VENV) with $$($(PYTHON) --version) (first run: a few minutes, ~3 GB)..."
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/python -m pip install --quiet $(PIP_SOURCE) --upgrade pip && \
	$(BIN)/python -m pip install --quiet $(PIP_SOURCE) -r requirements.txt && \
	$(BIN)/python -m pip install --quiet $(PIP_SOURCE) --no-deps -e . && \
	$(BIN)/python -m helpers.kernel && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install-seconds && \
	touch $(STAMP) && echo "Installed in $$(cat $(VENV)/.install-seconds) s."

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) $(LAB_ROOT_FLAG)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# For contributors, while changing helpers/: everything but the slow tiers.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not notebook and not browser and not offline_install" $(PYTEST_ARGS)

# What the browser test checks after its Run All, through nbval: each notebook with its default
# parameters, the `# NBVAL_CHECK_OUTPUT` cells compared with their stored outputs.
test-nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with \
		tests/nbval_sanitize.cfg --nbval-cell-timeout 300 notebooks $(PYTEST_ARGS)

# The proof that no assertion depends on an idle machine (tests/under_load.py).
RUNS ?= 5
test-loaded: $(STAMP)
	$(BIN)/python tests/under_load.py --runs $(RUNS) -- $(PYTEST_ARGS)

# Ends with one line, READY or FIX FIRST: ..., and nothing after it (make's own "Error 1" line
# would push it off the end); scripts that need the exit code run `python -m helpers.envcheck`.
check: $(STAMP)
	@$(BIN)/python -m helpers.envcheck || true

bench: $(STAMP)
	$(BIN)/python -m helpers.bench

# Every pinned package (and the course itself) as wheels in one folder, for a USB stick or a
# local share. Learners install from it with no internet (WORKSHOP.md):
#   make install FROM=/path/to/wheelhouse
# (pip and setuptools come along: the offline install upgrades pip and builds `pip install -e .`).
wheelhouse:
	@if [ -z "$(PYTHON)" ]; then echo "No Python 3.10-3.13 found on PATH." >&2; exit 1; fi
	@mkdir -p $(WHEELHOUSE)
	$(PYTHON) -m pip download --quiet --dest $(WHEELHOUSE) -r requirements.txt pip "setuptools>=68" $(if $(PLATFORMS), \
		--only-binary=:all: $(foreach p,$(PLATFORMS),--platform $(p)) \
		$(if $(PY_VERSION),--python-version $(PY_VERSION)))
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	@rm -rf build *.egg-info
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info wheelhouse
	find models -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
