# On a fresh machine:  make demo  (the exporter on a simulated organisation),  make test  (the tests),
# make run  (the exporter on this machine's Claude Code logs and, with a key, the Admin API).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install system-deps run demo test test-fast lint mixin bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m compileall -q exporter  # the bytecode an installed package carries
	touch $@

install: $(VENV)/.installed

# Prometheus, promtool, Alertmanager and amtool for the rule tests and the end-to-end run.
system-deps:
	sh scripts/install-system-deps.sh

run: install
	$(VENV)/bin/claude-budget-exporter serve $(ARGS)

# The whole product on a simulated organisation: no key, no logs, never the real Admin API.
demo: install
	$(VENV)/bin/claude-budget-exporter serve --demo $(ARGS)

test: install system-deps lint
	$(PY) -m pytest $(ARGS)

lint: install
	$(PY) -m ruff check exporter tests bench mixin
	$(PY) -m mypy

# the pure and in-process layer: no exporter, command, Prometheus or browser is started
test-fast: install
	TEST_LAYER=fast $(PY) -m pytest -m "not e2e and not subprocess" $(ARGS)

# The monitoring mixin (mixin/*.libsonnet) -> deploy/prometheus/*_rules.yml, the Kubernetes
# PrometheusRule and grafana/dashboards/*.json; tests/test_mixin.py fails when they differ.
mixin: install
	$(PY) mixin/build.py $(ARGS)

bench: install
	$(PY) bench/bench_ingest.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts
