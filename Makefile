# `make run` starts smsrelay locally; `make test` runs the linters and the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/smsrelay serve

test: $(STAMP) system-deps lint typecheck pytest

# The tests start their own PostgreSQL (Debian's server binaries) on loopback.
system-deps:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
		(apt-get update && apt-get install -y --no-install-recommends postgresql)
	@ls /usr/bin/chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends chromium)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/render_one.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
