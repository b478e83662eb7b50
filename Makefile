# FaceVal: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install services demo up test unit integration lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## RabbitMQ and Redis: used where they run, started or installed (apt-get) where they do not.
services:
	bash scripts/ensure-services.sh

## The whole stack on embedded defaults, the bundled sample pairs end to end, then stop.
demo: install services
	$(BIN)/faceval demo

## The stack, serving until Ctrl-C (gateway on 127.0.0.1:8000).
up: install services
	$(BIN)/faceval up

## Lint, types, then every test (unit and integration, on real servers).
test: install services lint
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install services
	$(BIN)/python -m pytest -m integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .faceval .pytest_cache .mypy_cache .ruff_cache
