# Everything a newcomer needs: `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: setup demo test lint proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/exchange-node demo

test: $(STAMP)
	$(BIN)/python -m pytest

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check exchange_node tests bench proto
	$(BIN)/ruff format --check exchange_node tests bench proto
	cd proto && ../$(BUF) lint

proto: $(STAMP)
	$(BIN)/python proto/generate.py

bench: $(STAMP)
	$(BIN)/python bench/crypto.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
