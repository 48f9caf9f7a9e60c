# Everything a newcomer needs: `make demo` and `make test` set up .venv themselves, from
# the exact versions and hashes in requirements.lock (`make lock` refreshes it on purpose).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# uv resolves the lock (universal: every platform and Python >= 3.11, with hashes);
# plain pip installs from it, so a newcomer needs nothing but Python and make.
UV_VERSION := 0.13.9
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# Twice quiet: errors still show, a machine's own index warnings do not.
PIP := $(BIN)/python -m pip --quiet --quiet --disable-pip-version-check

# The console's browser tests drive Debian's chromium (Playwright's own browser download
# is not used). Installed with apt-get when missing; where that is impossible the
# browser tests fail and say so.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup postgresql demo test lint lock proto spec bench clean chromium screenshots

# A changed lock rebuilds the environment from scratch: nothing unlocked stays behind.
$(STAMP): $(LOCK) pyproject.toml
	@echo "Setting up $(VENV) from $(LOCK) (once; about half a minute)"
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --require-hashes --no-deps -r $(LOCK)
	@$(PIP) install --no-deps --no-build-isolation -e .
	@$(PIP) check
	@touch $(STAMP)

chromium:
	@[ -x $(CHROMIUM) ] || { echo "Installing chromium for the console's browser tests"; \
	  $(SUDO) apt-get install -y chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y chromium >/dev/null; } || \
	  echo "could not install chromium: the console's browser tests will fail"; }

setup: $(STAMP) chromium postgresql

# The tests run the store on SQLite and on a throwaway PostgreSQL server they start
# themselves from Debian's binaries: installed here where missing (or name a server
# with EXCHANGE_NODE_TEST_PG_URL). `make demo` needs no database server.
postgresql:
	@if [ -z "$$EXCHANGE_NODE_TEST_PG_URL" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		&& ! command -v initdb >/dev/null 2>&1; then \
		echo "Installing PostgreSQL (Debian's postgresql package) for the tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/exchange-node demo

test: $(STAMP) chromium postgresql
	$(BIN)/python -m pytest

# The console's pages as PNG in docs/console/, taken by its browser tests.
screenshots: $(STAMP) chromium
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/test_console_browser.py

# Re-resolve every dependency to the newest versions pyproject.toml allows.
lock:
	$(PYTHON) -m venv .tools/lock
	.tools/lock/bin/python -m pip --quiet --disable-pip-version-check install uv==$(UV_VERSION)
	.tools/lock/bin/uv pip compile pyproject.toml --extra dev --universal \
		--python-version 3.11 --generate-hashes --upgrade --quiet -o $(LOCK)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check exchange_node tests bench proto
	$(BIN)/ruff format --check exchange_node tests bench proto
	cd proto && ../$(BUF) lint

proto: $(STAMP)
	$(BIN)/python proto/generate.py

# The parts of docs/protocol.md generated from the code (the case lifecycle table).
spec: $(STAMP)
	$(BIN)/python docs/generate.py

bench: $(STAMP)
	$(BIN)/python bench/crypto.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
