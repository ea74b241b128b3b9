# darwin-notify: every command a newcomer or CI needs. Each target creates the virtual
# environment it uses and installs the pinned dependencies (constraints.txt) into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv demo ui test test-unit test-integration test-mssql services-up services-down services-status lint bench bench-ui bench-throttle soak clean

help:
	@echo "make demo            run the main job on the embedded default (no servers)"
	@echo "make test            start the services, run every test, stop the services"
	@echo "make test-unit       tests that need no services"
	@echo "make test-mssql      the T-SQL executed on DARWIN_NOTIFY_TEST_MSSQL_URL's server"
	@echo "make services-up     PostgreSQL primary + standby + store, Kafka, provider sinks"
	@echo "make services-down   stop them"
	@echo "make ui              Dagster UI on the demo's data"
	@echo "make bench           benchmark on the real stack"
	@echo "make bench-throttle  two send workers against a rate-limited sink"
	@echo "make bench-ui        the Dagster UI's partitions page with ten years of days"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: venv
	$(BIN)/darwin-notify demo --dir $(DEMO_DIR)

ui: venv
	DAGSTER_HOME=$(abspath $(DEMO_DIR))/dagster_home DARWIN_NOTIFY_HOME=$(abspath $(DEMO_DIR)) \
		$(BIN)/dagster dev -w workspace.yaml

test-unit: venv
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

# The integration tier needs the services; they are stopped again whatever the outcome.
# Integration tests read the services' settings from `infra/services.sh env` themselves, so
# the other tests see a clean environment (the embedded default).
# The browser test's screenshots are kept in .artifacts/ui, the run's artifacts.
test: venv lint
	bash infra/services.sh up
	DARWIN_NOTIFY_UI_ARTIFACTS=$${DARWIN_NOTIFY_UI_ARTIFACTS:-$(abspath .artifacts/ui)} \
		$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; bash infra/services.sh down; exit $$status

# The executed T-SQL tier (docs/sqlserver.md): needs a SQL Server of your own, named by
# DARWIN_NOTIFY_TEST_MSSQL_URL (password in DARWIN_NOTIFY_TEST_MSSQL_PASSWORD); its database is
# a scratch one. Without it, `make test` reports these tests as skipped, never as passed.
test-mssql: venv
	@test -n "$$DARWIN_NOTIFY_TEST_MSSQL_URL" || { echo "set DARWIN_NOTIFY_TEST_MSSQL_URL (docs/sqlserver.md)"; exit 2; }
	$(BIN)/python -m pytest -m mssql -rs $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

services-up:
	bash infra/services.sh up

services-down:
	bash infra/services.sh down

services-status:
	bash infra/services.sh status

# The linter, the formatter's check and the type checker; part of `make test`.
lint: venv
	$(BIN)/ruff check darwin_notify_assets darwin_notify_tests benchmarks scripts
	$(BIN)/ruff format --check darwin_notify_assets darwin_notify_tests benchmarks scripts
	$(BIN)/mypy

# The benchmark on the real stack (BENCHMARKS.md); e.g. `make bench BENCH_ARGS="--size 20000"`.
bench: venv
	bash infra/services.sh up
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# The UI's partitions page with ten years of days, in headless Chromium (BENCHMARKS.md);
# `services.sh up` installs the browser. E.g. `make bench-ui BENCH_ARGS="--materialized 3653"`.
bench-ui: venv
	bash infra/services.sh up
	$(BIN)/python benchmarks/ui_partitions.py $(BENCH_ARGS)

# Two send worker processes against a rate-limited sink, with and without the shared provider
# budget (BENCHMARKS.md); e.g. `make bench-throttle BENCH_ARGS="--sink-rate 100 --budgets 80,0"`.
bench-throttle: venv
	bash infra/services.sh up
	$(BIN)/python benchmarks/throttle.py $(BENCH_ARGS)

# The randomized fault soak on the real stack; e.g. `make soak SOAK_ARGS="--windows 10 --seed 2"`.
soak: venv
	bash infra/services.sh up
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
