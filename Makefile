# The README's commands. Each installs .venv on first use (scripts/install.sh; a no-op afterwards).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test processes (pytest-xdist): 2 fits the 2-core CI machine (13 min instead of 19; each process
# starts its own Ceph gateway and Prefect server). 0 runs the suite in this process.
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint format clean

install:
	@bash scripts/install.sh

demo: install
	$(VENV)/bin/zodi demo $(if $(WORKDIR),--workdir $(WORKDIR),)

# The S3 tests run against a real Ceph RADOS Gateway on 127.0.0.1 (Debian packages, installed
# once by scripts/ceph_rgw.sh; the test session starts and stops the daemons itself).
test: install
	@bash scripts/ceph_rgw.sh install
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache zodi-demo
