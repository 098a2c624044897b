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
# Jupyter refuses to run as root unless told; containers and cloud workspaces often are root.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k export"`.
PYTEST_ARGS ?=

.PHONY: lab test install check bench clean help

help:
	@echo "make lab      start JupyterLab on the notebooks (installs on first use)"
	@echo "make test     run the whole test suite: lint, unit tests, server conformance, notebooks"
	@echo "make check    pre-flight check of this machine (instructors: run it on every laptop)"
	@echo "make bench    measure the embedded server (latency, throughput, cold start)"
	@echo "make install  create .venv and install the pinned requirements"
	@echo "make clean    remove .venv, caches and exported models"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml helpers/kernel.py
	@if [ -z "$(PYTHON)" ]; then \
		echo "No Python 3.10-3.13 found on PATH: install one, or run make PYTHON=/path/to/python3.12 ..." >&2; exit 1; fi
	@echo "Setting up $(VENV) with $$($(PYTHON) --version) (first run: a few minutes, ~3 GB)..."
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/python -m pip install --quiet --upgrade pip && \
	$(BIN)/python -m pip install --quiet -r requirements.txt && \
	$(BIN)/python -m pip install --quiet --no-deps -e . && \
	$(BIN)/python -m helpers.kernel && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install-seconds && \
	touch $(STAMP) && echo "Installed in $$(cat $(VENV)/.install-seconds) s."

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) $(LAB_ROOT_FLAG)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/python -m helpers.envcheck

bench: $(STAMP)
	$(BIN)/python -m helpers.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
	find models -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
