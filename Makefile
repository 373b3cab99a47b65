# The two commands of the Quickstart: `make run` and `make test`. Each creates .venv on first use
# and installs the exact versions of requirements-dev.lock (hashes checked), then the project.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The image's dependencies (pyproject `dependencies`) and, for development, those plus the
# `test` and `embedded` extras; both with hashes, refreshed by `make lock`.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --generate-hashes --python-version 3.11 --quiet

.PHONY: run test unit lint bench clean deps lock

$(STAMP): pyproject.toml $(DEV_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sarafan up

# promtool and prometheus (Debian package `prometheus`) for the alert-rule and real-Prometheus
# tests, and Chromium (Debian package `chromium`) for the check-in page's browser test, driven by
# Playwright with this system browser (never `playwright install`); where apt-get is missing
# those tests skip with that reason. The Prometheus package's own service is never left
# running: the tests start the binary on a free port.
deps:
	@command -v promtool >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     --no-install-recommends prometheus >/dev/null \
	  && { systemctl disable --now prometheus 2>/dev/null; \
	       service prometheus stop 2>/dev/null; true; }; } \
	  || echo "promtool unavailable: the Prometheus tests will be skipped"
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     --no-install-recommends chromium >/dev/null; } \
	  || echo "chromium unavailable: the check-in page's browser test will be skipped"

# Two pytest-xdist workers by default (what CI runs), each test file whole on one of them
# (`loadfile`: a module's servers start once): 9 to 10 minutes on two cores, against about 14
# for one process (`make test TEST_WORKERS=0`). Each worker's servers take their ports from
# their own slice of SARAFAN_PORT_RANGE (tests/conftest.py; CONTRIBUTING, "Tests").
TEST_WORKERS ?= 2
test: $(STAMP) deps
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The fast tests: rules, models, use cases with in-memory fakes; no server is started. Their
# property tests run under the Hypothesis profile `unit` (tests/properties.py): a fifth of the
# examples `make test` tries, which runs the same tests under the default profile. Python keeps
# its bytecode caches (`__pycache__`, ignored by git) even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): compiling the project and rewriting the tests' asserts again on
# every run took about a third of the time. Schemathesis's pytest plugin (for tests/e2e) is
# not loaded: no fast test uses it, and importing it costs half a second. They run in one
# pytest-xdist worker per CPU (`UNIT_WORKERS=0` for one process): they share nothing but the
# read-only sources; on two cores that took 8.2-11.0 s against 10.7-12.6 s in one process.
UNIT_WORKERS ?= auto
unit: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q tests/unit --hypothesis-profile=unit \
	  -p no:schemathesis $(if $(filter-out 0,$(UNIT_WORKERS)),-n $(UNIT_WORKERS))

# After changing a dependency in pyproject.toml: re-resolve both lock files with uv, keeping
# every locked version that still fits (`make lock UPGRADE=1` moves all to the newest). The
# image's lock is constrained to the development one, so the image runs what the tests ran.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra test --extra embedded $(LOCK_FLAGS) \
	  $(if $(UPGRADE),--upgrade) -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -c $(DEV_LOCK) -o $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sarafan .pytest_cache
