# Writ: everything a newcomer needs is `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WRIT   := $(VENV)/bin/writ
STAMP  := $(VENV)/.installed

.PHONY: all venv proto proto-check docker images demo test unit integration bench lint clean

all: test

# The virtualenv, with the package installed editable plus dev tools. Debian's python3
# lacks venv until python3-venv is installed; do that when needed (root).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
	  (apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV))
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

proto: $(STAMP)
	$(PY) proto/generate.py

proto-check: $(STAMP)
	$(PY) proto/generate.py --check

# Install Debian's docker.io (and debootstrap) and start dockerd when none answers.
docker: $(STAMP)
	$(PY) -m writ.engine

# Base image (debootstrap, cached by recipe hash) and the example tool images.
images: docker
	$(WRIT) images build

demo: images
	$(PY) -m writ.demo

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

integration: images
	$(PY) -m pytest tests/integration -q

test: proto-check images
	$(PY) -m pytest tests -q

bench: images
	$(PY) -m writ.bench

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime tests tool_images
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info runtime/*.egg-info
