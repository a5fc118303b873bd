# Tollgate: two commands to start (`make dev`, `make test`); everything else is optional.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
TOOLS := .tools
# Use uv from PATH when present; otherwise install the pinned version into .tools (from PyPI). .tools/bin
# goes on PATH for every recipe, because the layer build and `cdk synth` (cdk.json) call `uv` too.
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)
PYTEST := $(UV) run --frozen pytest
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export UV_LINK_MODE := copy

.PHONY: help install dev test test-unit test-functional test-providers test-infra test-e2e lint format \
        synth deploy layer clean bench bench-smoke

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.installed: $(UV) pyproject.toml layers/providers/pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: .venv/.installed node_modules/.installed ## Install Python (uv, locked) and Node (npm, locked) dependencies

dev: .venv/.installed ## Run Tollgate locally on 127.0.0.1:$${TOLLGATE_PORT:-8080}, with moto for AWS
	$(UV) run --frozen python -m tollgate.local.runner

test: install ## Run every test tier (what CI runs), on both cores
	$(PYTEST) -q -p no:cacheprovider -n 2 --dist loadfile

test-unit: .venv/.installed ## Pure logic: translation, money, parsing
	$(PYTEST) -q tests/unit

test-functional: .venv/.installed ## The apps in-process on moto
	$(PYTEST) -q tests/functional

test-providers: .venv/.installed ## Adapters against loopback servers speaking each vendor's protocol
	$(PYTEST) -q tests/providers

test-infra: install ## The synthesized CDK stack, with assertions and cdk-nag
	$(PYTEST) -q tests/infra

test-e2e: .venv/.installed ## A live local server driven by the official SDKs
	$(PYTEST) -q tests/e2e

bench: .venv/.installed ## Benchmark vs the direct path and LiteLLM (15-20 min; apt-installs wrk if root): writes bench/RESULTS.md
	$(UV) run --frozen --group bench python -m bench.run $(BENCH_ARGS)

bench-smoke: .venv/.installed ## The benchmark harness end to end in seconds (a few requests per path)
	$(UV) run --frozen python -m bench.run --smoke

lint: .venv/.installed ## ruff (lint + format check) and mypy (strict on tollgate)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: .venv/.installed ## Apply ruff's fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

layer: .venv/.installed ## Build the Lambda layer (tollgate + locked deps, for Python 3.13 arm64) into build/layer
	$(UV) run --frozen python layers/providers/build_layer.py build/layer

synth: install ## Synthesize the CloudFormation template into cdk.out
	npx cdk synth --quiet

deploy: install ## Deploy to the AWS account of your current credentials
	npx cdk deploy --require-approval broadening

clean: ## Remove build outputs and local environments
	rm -rf .venv $(TOOLS) node_modules cdk.out build .pytest_cache .mypy_cache .ruff_cache
