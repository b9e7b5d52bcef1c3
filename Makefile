# expertd: `make run` serves every expert (and the HTTP bridge); `make test` runs every test.
# Both set up what is missing first: the virtualenv, the pinned packages, the
# default models (trained from the VADER ground truth) and the bridge's npm packages.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NODE_STAMP := express_bridge/node_modules/.package-lock.json
MODELS := models/sentiment/model.keras models/genre/model.keras
export TF_CPP_MIN_LOG_LEVEL ?= 2
export EXPERTD_ENDPOINT ?= tcp://127.0.0.1:4242
export PORT ?= 3000

.PHONY: run serve bridge test lint test-python test-node models setup bench clean

## Start the server and the HTTP bridge in the foreground; Ctrl-C stops both cleanly.
run: setup
	@echo "expertd on $(EXPERTD_ENDPOINT), HTTP bridge on http://127.0.0.1:$(PORT) (Ctrl-C stops both)"
	@trap 'kill -TERM $$server $$bridge 2>/dev/null; wait' INT TERM; \
	$(VENV)/bin/expertd serve & server=$$!; \
	npm start --silent --prefix express_bridge & bridge=$$!; \
	wait -n; status=$$?; kill -TERM $$server $$bridge 2>/dev/null; wait; exit $$status

## Only the ZeroRPC server.
serve: $(PIP_STAMP) $(MODELS)
	$(VENV)/bin/expertd serve

## Only the HTTP bridge (expects a server at $$EXPERTD_ENDPOINT).
bridge: $(NODE_STAMP)
	npm start --prefix express_bridge

## Every test: Python (pytest) and Node (node --test), each against a real server.
test: setup lint test-python test-node

## Static checks (ruff) of the Python code.
lint: $(PIP_STAMP)
	$(VENV)/bin/ruff check .

test-python: $(PIP_STAMP) $(MODELS)
	bash deploy/install-haproxy.sh
	$(VENV)/bin/pytest

test-node: $(PIP_STAMP) $(MODELS) $(NODE_STAMP)
	npm test --prefix express_bridge

setup: $(PIP_STAMP) $(MODELS) $(NODE_STAMP)

$(PIP_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		--config-settings editable_mode=compat -e '.[models,test]'
	touch $@

## Train the default models that are missing (reproducible: fixed seeds and split).
models: $(PIP_STAMP)
	$(PY) -m experts.train --data-dir data --out models

$(MODELS): | $(PIP_STAMP)
	$(PY) -m experts.train --data-dir data --out models

$(NODE_STAMP): express_bridge/package.json express_bridge/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix express_bridge

## Benchmarks: writes bench/RESULTS.md (installs wrk and libev-dev from Debian if missing).
bench: setup
	bash bench/setup.sh
	$(PY) -m bench.run
	bash deploy/install-haproxy.sh
	$(PY) -m bench.scale

clean:
	rm -rf $(VENV) express_bridge/node_modules models data
