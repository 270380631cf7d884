# The two commands of the README: `make demo` and `make test`. Everything installs itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.recon/dagster_home
PYTEST_ARGS ?=

.PHONY: install demo test test-scaling test-fast ui bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/recon-pipeline demo

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not celery" $(PYTEST_ARGS)

# The Celery end-to-end runs (docs/scaling.md): about 5 minutes on 2 cores, so apart from `make test`;
# CI runs both.
test-scaling: install
	$(BIN)/python -m pytest -m celery $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

ui: install $(DAGSTER_HOME)/dagster.yaml
	RECON_DATABASE_URL=$${RECON_DATABASE_URL:-sqlite:///$(CURDIR)/.recon/trading.db} \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Debian's Chromium for the real-browser UI test (recon_pipeline_tests/ui); nothing to do when present.
.PHONY: chromium
test: chromium
chromium:
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

bench: install
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .recon $(VENV)
