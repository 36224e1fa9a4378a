# Two entry points set up everything on a fresh machine:
#   make demo   create .venv from uv.lock, serve the demo site
#   make test   create .venv from uv.lock, lint, type-check, test
#
# Every environment is installed from uv.lock with `uv sync --locked`, so every
# machine gets the same versions of the runtime and the dev tools. uv itself is
# pinned below and installed with pip into .tools/ when that version is missing.
# `make lock` refreshes uv.lock to the newest releases pyproject.toml allows.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
UV := .tools/uv-$(UV_VERSION)/bin/uv
# uv must use the interpreter it is given, never download one.
export UV_PYTHON_DOWNLOADS := never
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test lint typecheck unit bench lock clean

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check \
		--target .tools/uv-$(UV_VERSION) uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --extra test \
		--python "$$(command -v $(PYTHON) || echo $(PYTHON))"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP) | $(UV)
	UV=$(abspath $(UV)) $(BIN)/python -m bench.run $(BENCH_ARGS)

lock: | $(UV)
	$(UV) lock --upgrade

clean:
	rm -rf $(VENV) .venv-* .tools .poolwarden .mypy_cache .pytest_cache .ruff_cache
