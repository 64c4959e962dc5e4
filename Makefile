# Two commands for a fresh machine:
#   make run   install, migrate, load the demo world (empty database only), serve on 127.0.0.1:8000
#   make test  install, make sure Chromium is there, run the whole suite (SQLite, and PostgreSQL if it answers)
# Everything runs from the project's own .venv (made by uv from uv.lock).

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 8000
PAIR_PORTS ?= 8000 8001
WORKERS ?= 2
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
PYTEST_ARGS ?=
LOCALES := zh_CN
TRANSLATIONS := clinic/translations

.PHONY: help install run pair serve demo test chromium translations lint

help:
	@echo "make run           install, migrate, load the demo world once, serve on http://$(HOST):$(PORT)/"
	@echo "make pair          two clinics side by side (三级 on $(word 1,$(PAIR_PORTS)), 基层 on $(word 2,$(PAIR_PORTS))), linked by agreements"
	@echo "make test          install and run the test suite (SQLite; PostgreSQL too when it answers)"
	@echo "make lint          ruff format --check, ruff check, mypy"
	@echo "make translations  extract strings and update $(TRANSLATIONS)/*/LC_MESSAGES/messages.po"

# uv into the system Python when it is missing, then the locked environment in .venv, then
# the npm packages of package-lock.json (node_modules/).
install:
	@if ! $(UV) --version >/dev/null 2>&1; then \
		echo "Installing uv into $$($(PYTHON) -c 'import sys; print(sys.executable)')"; \
		$(PYTHON) -m pip install --quiet uv; \
	fi
	# Bytecode compiled once here: every process of the app and the tests (gunicorn workers, the
	# `flask` commands of the two-clinic tests) then reads it, even with PYTHONDONTWRITEBYTECODE set.
	$(UV) sync --extra dev --quiet --compile-bytecode
	$(PY) -m compileall -q -j 0 clinic identity prescriptions pharmacy migrations wsgi.py >/dev/null
	# Browser libraries the app serves itself (Twilio Video for the visit room), from package-lock.json.
	if ! command -v npm >/dev/null 2>&1; then \
		echo "Installing Debian's nodejs and npm (for the browser libraries of package-lock.json)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm </dev/null; \
	fi
	if [ ! -d node_modules/twilio-video ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		npm ci --no-audit --no-fund --ignore-scripts --loglevel=error; \
	fi

# Embedded defaults (see clinic/core/config.py): SQLite in instance/, inline jobs,
# PAYMENTS=off, SMS codes written to the log. Secrets are generated into instance/.
run: install
	@echo "== Migrating the database (Alembic)"
	$(FLASK) db upgrade
	if $(PY) scripts/devdemo.py is-empty; then
		echo "== Loading the demo world into the empty database (saved to instance/demo.json)"
		$(FLASK) demo > instance/demo.json.tmp
		mv instance/demo.json.tmp instance/demo.json
	fi
	$(PY) scripts/devdemo.py summary --url http://$(HOST):$(PORT)/
	echo "== Serving with gunicorn on http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	exec $(VENV)/bin/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --access-logfile - wsgi:app

# Two institutions side by side (issue 19): each its own instance folder and database under
# instance/pair/{a,b}, demo world (三级 and 基层), gunicorn and outbox sweeper, then a
# cooperation agreement each way from the other's JWKS; prints both sides' logins.
# Ctrl-C stops both. `make pair PAIR_PORTS="9000 9001"` for other ports.
pair: install
	exec $(PY) scripts/pair.py --host $(HOST) --ports $(PAIR_PORTS)

# The browser tests drive Debian's Chromium (never a downloaded browser build); a CJK
# font makes the Chinese pages' screenshots readable.
chromium:
	@if [ ! -x $(CHROMIUM) ] || [ ! -e $(CJK_FONT) ] || ! command -v pdftoppm >/dev/null || ! command -v zbarimg >/dev/null; then \
		echo "Installing Debian's chromium, a CJK font (embedded in prescription PDFs), poppler-utils and zbar-tools (the PDF/QR test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei poppler-utils zbar-tools </dev/null; \
	fi

# One pytest run; the harness (tests/conftest.py) parametrizes over both backends
# when TEST_DATABASE_URL is set.
test: install chromium
	@if $(PY) scripts/devdemo.py pg-ready "$(PG_URL)"; then
		echo "PostgreSQL answers: testing on SQLite and PostgreSQL"
		export TEST_DATABASE_URL="$(PG_URL)"
	else
		echo "PostgreSQL does not answer on $(PG_URL): testing on SQLite only"
	fi
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Extract every marked string (Python and Jinja), then update (or start) each catalog.
# The .po files are committed; the .mo files are compiled at app start (clinic/core/i18n.py).
translations: install
	mkdir -p build
	$(VENV)/bin/pybabel -q extract -F babel.cfg --no-location --sort-output \
		-k _l -k lazy_gettext -k N_ \
		-k Invalid -k Conflict -k NotFound -k Forbidden -k Unauthenticated -k RateLimited \
		-k ServiceUnavailable -k DomainError -k IdNumberError -k AlreadyRegistered -k Violation:2 \
		-k BadUpload -k NotAnImage -k ImageTooLarge -k InvalidSignature \
		-k FaceVerificationRequired -k VisitClosed -k IllegalVisitTransition -k StaleConsent \
		-k ServiceSuspended -k NotEligibleCondition -k VisitAlreadyOpen -k AlreadyRated -k VisitNotCompleted \
		-o build/messages.pot .
	for loc in $(LOCALES); do
		po=$(TRANSLATIONS)/$$loc/LC_MESSAGES/messages.po
		if [ -f $$po ]; then
			$(VENV)/bin/pybabel -q update --no-fuzzy-matching --ignore-obsolete --width 120 -i build/messages.pot -d $(TRANSLATIONS) -l $$loc
		else
			$(VENV)/bin/pybabel -q init --width 120 -i build/messages.pot -d $(TRANSLATIONS) -l $$loc
		fi
	done
	$(PY) -c "from babel.messages.pofile import read_po; import sys; \
		[print(p, 'untranslated:', sum(1 for m in read_po(open(p,'rb')) if m.id and not m.string)) for p in sys.argv[1:]]" \
		$(foreach l,$(LOCALES),$(TRANSLATIONS)/$(l)/LC_MESSAGES/messages.po)
