# resnet-serve: `make serve` and `make test` do all the set-up on a fresh machine.
comma  := ,
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
MODELS ?= models
MODEL  ?= resnet50
# Extras for `make install`: the CPU server, the torch backends and the export tool.
# openvino: the OpenVINO backend (issue 15), so `make test` covers it too.
# otel: OpenTelemetry traces (issue 20).
EXTRAS ?= cpu,torch,export,openvino,otel
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install install-dev serve test test-fast test-docker test-ray bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(subst -,$(comma),$*)]"
	touch $@

install: $(STAMP)

install-dev:
	$(MAKE) install EXTRAS=$(EXTRAS),dev,bench

$(MODELS)/$(MODEL)/config.json: | $(STAMP)
	$(BIN)/resnet-serve export --arch $(MODEL) --weights imagenet --allow-random-fallback \
		--formats eager,torchscript,onnx --out $(MODELS)/$(MODEL)

serve: install $(MODELS)/$(MODEL)/config.json
	$(BIN)/resnet-serve serve --models $(MODELS) --host $(HOST) --port $(PORT)

test: install-dev lint
	@if [ -x deploy/ci/install-test-tools.sh ]; then deploy/ci/install-test-tools.sh $(VENV); fi
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# ruff (rules in pyproject.toml), the formatting, and mypy (strict on the serving core):
# `make test` runs it first, so a finding fails CI.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not e2e and not slow" $(PYTEST_ARGS)

test-docker: install-dev
	deploy/ci/install-test-tools.sh --docker $(VENV)
	RESNET_SERVE_DOCKER_TESTS=1 $(BIN)/python -m pytest -q tests/deploy -m docker

# Opt-in: a real two-node Ray cluster on 127.0.0.1 runs resnet-serve as Serve replicas and loses
# a node under load (about 1-2 min, plus the ray extra: about 600 MB).
test-ray:
	$(MAKE) install EXTRAS=$(EXTRAS),dev,bench,ray
	RESNET_SERVE_RAY_TESTS=1 $(BIN)/python -m pytest -q tests/ray

clean:
	rm -rf $(VENV) .pytest_cache
