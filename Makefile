# The way in: `make run` (cookieguard's main job) and `make test` (the whole suite).
# Both build .venv (and the test IdP's node_modules) themselves when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OIDC_DIR := tests/oidc_provider
PYTEST_ARGS ?=

.PHONY: run test lint fmt clean venv node redis

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo,speed]'
	touch $(STAMP)

venv: $(STAMP)

node: $(OIDC_DIR)/node_modules/.package-lock.json

$(OIDC_DIR)/node_modules/.package-lock.json: $(OIDC_DIR)/package-lock.json
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The tests run a real Redis (tests/support/redis_server.py); install Debian's when it is missing.
redis:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

run: $(STAMP)
	$(PY) -m cookieguard demo

lint: $(STAMP)
	$(VENV)/bin/ruff check cookieguard tests bench examples
	$(VENV)/bin/ruff format --check cookieguard tests bench examples
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format cookieguard tests bench examples
	$(VENV)/bin/ruff check --fix cookieguard tests bench examples

test: $(STAMP) node redis lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OIDC_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info

# cookieguard vs nginx vs a bare aiohttp proxy on 127.0.0.1 (bench/README.md); ~8 minutes.
# Installs nginx and wrk from Debian's packages when missing. BENCH_ARGS e.g. "--upstream aiohttp".
BENCH_ARGS ?=
.PHONY: bench
bench: $(STAMP)
	@if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || test -x /usr/sbin/nginx; }; then \
		apt-get update && apt-get install -y nginx wrk; fi
	$(PY) bench/run.py $(BENCH_ARGS)
