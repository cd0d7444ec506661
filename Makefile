# Two commands on a fresh clone:  `make demo` (the main job) and `make test`.
# Every target installs what it needs first and is safe to re-run.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PACKAGES := common services/train services/evaluate services/calibrate services/timeseries services/ingest devtools
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: install system-deps kafka-jars test lint demo bench bench-quick chaos clean help

help:
	@echo "make demo        run the whole pipeline locally on synthetic data (the main job)"
	@echo "make test        install everything and run the test suite"
	@echo "make lint        ruff + mypy"
	@echo "make bench       full benchmarks -> bench/results/latest.json"
	@echo "make bench-quick reduced benchmarks (< 2 min)"
	@echo "make chaos       the chaos suite (kill -9, broker/S3 outages, bad inputs) -> bench/results/chaos.json"

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(addprefix -e ,$(PACKAGES)) -r requirements-dev.txt
	touch $@

# Debian packages: promtool/prometheus for the rule tests and the live-scrape test.
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian package prometheus"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q prometheus; }
# Debian package chromium: renders the HTML report headless in its test.
	@command -v chromium >/dev/null || { \
	  echo "installing Debian package chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

# Apache Kafka jars from Maven Central into .cache/kafka (idempotent).
kafka-jars: $(STAMP)
	$(VENV)/bin/idq kafka fetch

install: $(STAMP) system-deps kafka-jars

test: install
	bash scripts/run-tests.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy common/src services/*/src devtools/src bench

demo: install
	$(VENV)/bin/idq demo --config etc/idq-demo.toml

bench: install
	$(PY) -m bench.run --full

bench-quick: install
	$(PY) -m bench.run --quick

# the full chaos suite; a reduced form runs in `make test` (tests/chaos)
chaos: install
	$(PY) -m idq_dev.chaos

clean:
	rm -rf .cache/demo .pytest_cache
