# One entry point for setting up, running and checking lowbit.
# `make demo` and `make test` work on a fresh machine: they create .venv and
# install everything the project needs (nothing is installed by hand).

PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.lowbit-installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv demo demo-cli test check lint typecheck imports bench system-deps clean

# torch is installed first, pinned, so no dependency can pull another (CUDA) build.
$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh "$(PY)" "$(VENV)"
	touch $(STAMP)

venv: $(STAMP)

## The README's first command: start `lowbit serve` (embedded), submit the bundled example through the
## API, follow it, download the artifacts, print the results table and the dashboard URL, stop the server.
## `make demo ARGS=--keep-serving` leaves the server running.
demo: venv
	$(BIN)/python -m examples.demo $(ARGS)

## The engine alone, no service: `lowbit quantize` on the bundled example.
demo-cli: venv
	$(BIN)/python -m examples.demo_cli

## The README's second command: everything the test suite needs, then the suite.
test: venv system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

system-deps:
	bash scripts/system-deps.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

check: lint typecheck imports test

bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
