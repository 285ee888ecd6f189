# Two commands for a newcomer: `make demo` and `make test`. Everything installs into .venv from
# pinned lock files; nothing is installed globally. `make demo` installs only what running needs
# (requirements.lock); `make test` and `make lint` add the development tools
# (requirements-dev.lock, the same pins plus pytest, mypy, ruff, hypothesis and stubs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# One stamp per profile, touched after a successful sync; syncing one profile removes both
# stamps first, so switching between `make demo` and `make test` re-syncs instead of trusting a
# stamp the other profile's sync has made stale. Each profile reinstalls only when its lock or
# pyproject.toml changes.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-runtime demo test lint clean

# `make install`: the development environment (what `make test` and `make lint` use).
install: $(DEV_STAMP)

install-runtime: $(RUNTIME_STAMP)

# $(1): the lock file to make .venv match exactly (uv pip sync adds and removes packages).
define sync_venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade
	$(BIN)/uv --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " \
		|| $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	rm -f $(RUNTIME_STAMP) $(DEV_STAMP)
	$(BIN)/uv pip sync --python $(BIN)/python $(1)
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@
endef

$(RUNTIME_STAMP): requirements.lock pyproject.toml
	$(call sync_venv,requirements.lock)

$(DEV_STAMP): requirements-dev.lock pyproject.toml
	$(call sync_venv,requirements-dev.lock)

demo: $(RUNTIME_STAMP)
	$(BIN)/billing-pipeline dev

test: $(DEV_STAMP)
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data
