# The two commands of the README: `make demo` and `make test`. Everything installs itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.recon/dagster_home
PYTEST_ARGS ?=

.PHONY: install demo test test-scaling test-fast soak ui bench bench-e2e bench-backfill bench-window lint clean

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
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not celery and not soak" $(PYTEST_ARGS)

# The Celery end-to-end runs (docs/scaling.md): 2-3 minutes on 2 cores, so apart from `make test`;
# CI runs both.
test-scaling: install
	$(BIN)/python -m pytest -m celery $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not slow and not soak" $(PYTEST_ARGS)

# The soak run of issue 7 (docs/reliability.md, "Soak run"): 48 hourly windows x 3 profiles through the
# emulator with seeded drift and exchange faults, judged on the database at the end. RECON_SOAK_SEED
# picks the seed (printed with the summary); apart from `make test`; CI runs it.
soak: install
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

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

# docs/performance.md: one 1e6-fill partition through Dagster; a week of one profile through the CLI.
bench-e2e: install
	$(BIN)/python -m bench.e2e $(BENCH_ARGS)

bench-backfill: install
	$(BIN)/python -m bench.backfill $(BENCH_ARGS)

bench-window: install
	$(BIN)/python -m bench.window_profile $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .recon $(VENV)
