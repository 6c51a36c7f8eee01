# The README's commands. Each installs .venv on first use (scripts/install.sh; a no-op afterwards).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test lint format clean

install:
	@bash scripts/install.sh

demo: install
	$(VENV)/bin/zodi demo $(if $(WORKDIR),--workdir $(WORKDIR),)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache zodi-demo
