# One command per job on a fresh machine with Python 3.11 and pip:
#   make demo   - install, train a small GPT on the built-in corpus, save a checkpoint, print samples
#   make test   - install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned: this exact CPU wheel is what the build machines carry; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml examples/nanogpt-variants/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e examples/nanogpt-variants
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nanogpt train --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
