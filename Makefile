# The two commands every user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install migrate run serve dev test lint typecheck openapi bench screenshot clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## install: create .venv with the service and its development tools
install: $(STAMP)

## migrate: bring $DATABASE_URL (or the embedded SQLite file) to the newest schema
migrate: install
	@eval "$$($(BIN)/python -m identity.settings)"; \
	  if [ "$$IDENTITY_EMBEDDED" = 0 ]; then bin/ensure-services postgres; fi
	$(BIN)/alembic upgrade head

## run: all set-up, then serve on $PORT (default 8000)
run: migrate
	@bin/run

## dev: Flask's development server with reload
dev: migrate
	$(BIN)/flask --app api run --port $${PORT:-8000} --debug

## test: all set-up, then the whole suite on real PostgreSQL, Redis and SQLite, and the
## explorer page in headless Chromium (installed from apt when missing and run as root)
test: install
	bin/ensure-services --install postgres redis browser
	$(BIN)/pytest $(PYTEST_ARGS)

## screenshot: docs/explorer.png, a real person page served by gunicorn on PostgreSQL
screenshot: install
	bin/ensure-services --install postgres browser
	$(BIN)/python -m tests.ui.screenshot docs/explorer.png

## bench: seed PostgreSQL, load /identify, the pgbench ceiling, async and growth (minutes;
## never part of `make test`); writes docs/benchmarks/RESULTS.md and throughput.png
bench: install
	bin/ensure-services postgres redis
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run

## openapi: write api/openapi.json, generated from the url map and api/schemas.py
openapi: install
	$(BIN)/python -m api.spec

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis identity.sqlite3*
