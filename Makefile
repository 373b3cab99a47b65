# The two commands of the Quickstart: `make run` and `make test`. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sarafan up

# promtool and prometheus (Debian package `prometheus`) for the alert-rule and real-Prometheus
# tests; where apt-get is missing those tests skip with that reason. The package's own service
# is never left running: the tests start the binary on a free port.
deps:
	@command -v promtool >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     --no-install-recommends prometheus >/dev/null \
	  && { systemctl disable --now prometheus 2>/dev/null; \
	       service prometheus stop 2>/dev/null; true; }; } \
	  || echo "promtool unavailable: the Prometheus tests will be skipped"

test: $(STAMP) deps
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sarafan .pytest_cache
