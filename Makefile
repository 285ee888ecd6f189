# Two commands for a newcomer: `make demo` and `make test`. Everything installs into .venv from
# the pinned requirements.lock; nothing is installed globally.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Touched after a successful install: make reinstalls only when the lock or pyproject changes.
INSTALLED := $(VENV)/.installed

.PHONY: install demo test lint clean

install: $(INSTALLED)

$(INSTALLED): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade
	$(BIN)/uv --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " \
		|| $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

demo: install
	$(BIN)/billing-pipeline dev

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data
