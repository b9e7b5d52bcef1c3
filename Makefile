# expertd: `make run` serves every expert (and the HTTP bridge); `make test` runs every test.
# Both set up what is missing first, one headed step at a time: the environment
# (.venv), the pinned packages, the data (VADER ground truth), the training of
# the default models, and the bridge's Node packages. Each step runs once.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
DATA := data/vader_icwsm2014/tweets_GroundTruth.txt
NODE_STAMP := express_bridge/node_modules/.package-lock.json
MODELS := models/sentiment/model.keras models/genre/model.keras
# consensus's held-out evaluation (it has no model of its own): reported by experts().
CONSENSUS_METRICS := models/consensus/metrics.json
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
PROFILE_VENV := .venv-profile
PROFILE_STAMP := $(PROFILE_VENV)/.installed
# The trace backend the tracing tests send spans to and query (tests/e2e/test_tracing.py).
PHOENIX_VENV := .venv-phoenix
PHOENIX_STAMP := $(PHOENIX_VENV)/.installed
CHROMIUM := /usr/bin/chromium
HAPROXY := /usr/sbin/haproxy
SYSTEMD_ANALYZE := /usr/bin/systemd-analyze
POSTGRES := /usr/lib/postgresql/15/bin/initdb
# Debian's podman, buildah, debootstrap and runc: tests/e2e/test_deploy_image.py builds and runs the image.
PODMAN := /usr/bin/podman
export EXPERTD_ENDPOINT ?= tcp://127.0.0.1:4242
export PORT ?= 3000

# $(call step,WHAT,FIRST-TIME COST): one heading per set-up step.
step = @printf '\n==> %s\n    (%s)\n' '$(1)' '$(2)'
PATH_HINT = @echo "The tools (expertd, ...) are in $(CURDIR)/$(VENV)/bin: run \`source $(VENV)/bin/activate\` or \`eval \"\$$(make -s env)\"\` to put them on PATH."

.PHONY: run serve bridge test test-unit lint test-python test-node models data setup env bench docs image clean

## Start the server, then (once it answers) the HTTP bridge; Ctrl-C stops both.
## Whatever fails, nothing is left running: the EXIT trap stops both.
run: setup
	@echo
	@echo "==> expertd on $(EXPERTD_ENDPOINT), then the HTTP bridge on http://127.0.0.1:$(PORT) (Ctrl-C stops both)"
	$(PATH_HINT)
	@if $(VENV)/bin/expertd status --quiet --timeout 2; then $(VENV)/bin/expertd status; \
	  echo "make run: a server already answers at $(EXPERTD_ENDPOINT); stop it first (expertd stop), or set EXPERTD_ENDPOINT" >&2; exit 1; fi
	@server=; bridge=; \
	trap 'trap - EXIT; kill -TERM $$bridge $$server 2>/dev/null; wait' EXIT; \
	trap 'exit 130' INT TERM HUP; \
	$(VENV)/bin/expertd serve & server=$$!; \
	until $(VENV)/bin/expertd status --quiet --timeout 2; do \
	  if ! kill -0 $$server 2>/dev/null; then wait $$server; code=$$?; \
	    echo "make run: expertd serve exited ($$code) before answering; the bridge was not started" >&2; \
	    exit $$(( code ? code : 1 )); fi; \
	  sleep 0.5; \
	done; \
	(cd express_bridge && exec node src/server.js) & bridge=$$!; \
	wait -n $$server $$bridge; exit $$?

## Only the ZeroRPC server.
serve: $(PIP_STAMP) $(MODELS)
	$(VENV)/bin/expertd serve

## Only the HTTP bridge (expects a server at $$EXPERTD_ENDPOINT).
bridge: $(NODE_STAMP)
	npm start --prefix express_bridge

## Every test: Python (pytest) and Node (node --test), each against a real server.
## Everything both suites need is set up first, one step at a time; then the two suites
## run side by side (most of their time is spent waiting for servers, and the machine has
## two cores): pytest prints as it goes, the Node suite's output (build/test-node.log)
## follows it. The target fails when either suite fails.
TEST_PYTHON_NEEDS := $(PIP_STAMP) $(MODELS) $(CONSENSUS_METRICS) $(HAPROXY) $(POSTGRES) $(DOCS_STAMP) $(SYSTEMD_ANALYZE) $(AIRFLOW_STAMP) $(DEPLOY_STAMP) $(PHOENIX_STAMP) $(PODMAN)
TEST_NODE_NEEDS := $(PIP_STAMP) $(MODELS) $(NODE_STAMP) $(CHROMIUM) $(HAPROXY)
PYTEST_ALL := $(VENV)/bin/pytest -rs --durations=15 tests/unit tests/e2e
test: setup lint $(TEST_PYTHON_NEEDS) $(TEST_NODE_NEEDS)
	$(call step,Python and Node tests side by side: pytest tests/unit then tests/e2e; node --test (real servers),about 13 minutes on 2 cores; a first build of the image on a machine adds about 2 minutes)
	@mkdir -p build; \
	setsid npm test --prefix express_bridge > build/test-node.log 2>&1 & node_pid=$$!; \
	trap 'kill -TERM -- -$$node_pid 2>/dev/null' INT TERM; \
	$(PYTEST_ALL); python_status=$$?; \
	wait $$node_pid; node_status=$$?; \
	printf '\n==> Node tests (npm test --prefix express_bridge), run beside pytest: build/test-node.log\n'; \
	cat build/test-node.log; \
	echo "pytest exited $$python_status, node --test exited $$node_status"; \
	test $$python_status -eq 0 && test $$node_status -eq 0

## Static checks (ruff) of the Python code.
lint: $(PIP_STAMP)
	$(call step,lint: ruff check,a second)
	@$(VENV)/bin/ruff check .

## The in-process tests only (tests/unit): no server process, no model, under a minute.
test-unit: $(PIP_STAMP)
	$(call step,unit tests: pytest tests/unit (in-process),seconds)
	$(VENV)/bin/pytest -q tests/unit

## The Python suite alone.
test-python: $(TEST_PYTHON_NEEDS)
	$(call step,Python tests: pytest tests/unit then tests/e2e (real expertd servers; a first build of the image on a machine adds about 2 minutes, then its cache in /var/cache/expertd-image serves),about 12 minutes on 2 cores)
	$(PYTEST_ALL)

## The Node suite alone.
test-node: $(TEST_NODE_NEEDS)
	$(call step,Node tests: node --test against a real server,about 2 minutes)
	npm test --prefix express_bridge

## The documentation site: docs/*.md into site/ (mkdocs build --strict: a broken link fails it).
## mkdocs-material lives in its own small venv (.venv-docs, exact pins in docs/requirements.txt);
## the benchmark numbers in the pages come from bench/RESULTS*.md (python -m bench.quote).
docs: $(DOCS_STAMP)
	$(call step,docs: mkdocs build --strict into site/,a few seconds)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict
	@echo "    open site/index.html"

$(DOCS_STAMP): docs/requirements.txt
	$(call step,docs tools: mkdocs-material in $(DOCS_VENV) (docs/requirements.txt),first time: about 15 s)
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r docs/requirements.txt
	@touch $@

## Apache Airflow for the example DAG's test (tests/e2e/test_deploy_airflow.py): its own venv,
## exact pins in deploy/airflow/requirements.txt, expertd's client installed on top (--no-deps).
$(AIRFLOW_STAMP): deploy/airflow/requirements.txt pyproject.toml
	$(call step,Airflow: apache-airflow in $(AIRFLOW_VENV) (deploy/airflow/requirements.txt),first time: about 100 s)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/airflow/requirements.txt
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
	@touch $@

## The offline checkers of deploy/ (kubernetes-validate, hadolint, yamllint): their own venv,
## exact pins in deploy/requirements.txt (tests/e2e/test_deploy_kubernetes.py, test_deploy_image.py).
$(DEPLOY_STAMP): deploy/requirements.txt
	$(call step,deploy checkers: kubernetes-validate and hadolint in $(DEPLOY_VENV) (deploy/requirements.txt),first time: about 35 s)
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
	@touch $@

## Only the server's OCI image (deploy/image/build.sh: debootstrap + the wheels + podman build), then
## a run of it (tests/e2e/test_deploy_image.py, also part of `make test`). What it makes is cached
## outside the clone (/var/cache/expertd-image as root): the first build takes minutes and about
## 2.5 GB there, a rebuild after a change to the Python code only its last layer.
image: setup $(DEPLOY_STAMP) $(PODMAN)
	$(call step,image: deploy/image/build.sh then a run of the image (tests/e2e/test_deploy_image.py),first time: about 6 minutes; then seconds)
	$(VENV)/bin/pytest -rsw tests/e2e/test_deploy_image.py

$(PODMAN):
	DEBIAN_FRONTEND=noninteractive apt-get install -y podman buildah debootstrap runc || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y podman buildah debootstrap runc)

## Arize Phoenix (an OpenTelemetry trace backend: OTLP/HTTP in, a query API out) in its own venv,
## exact pins in tests/phoenix/requirements.txt: tests/e2e/test_tracing.py starts it and queries it.
$(PHOENIX_STAMP): tests/phoenix/requirements.txt
	$(call step,trace backend: Arize Phoenix in $(PHOENIX_VENV) (tests/phoenix/requirements.txt),first time: about 3 minutes and 860 MB)
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/phoenix/requirements.txt
	@touch $@

## Debian's haproxy, for tests/e2e/test_haproxy.py, express_bridge/test/haproxy.test.js and bench/scale.py (deploy/haproxy.cfg).
$(HAPROXY):
	DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy)

## Debian's systemd, for `systemd-analyze verify` of deploy/systemd/*.service (tests/e2e/test_deploy_systemd.py).
$(SYSTEMD_ANALYZE):
	DEBIAN_FRONTEND=noninteractive apt-get install -y systemd || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y systemd)

## Debian's PostgreSQL server, for tests/e2e/test_learn_postgres.py (the feedback log across machines)
## and bench/learning_pg.py; the tests start their own throw-away cluster, never the system's.
$(POSTGRES):
	DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)

## Debian's chromium, for the page's browser test (express_bridge/test/page.test.js).
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

setup: $(PIP_STAMP) $(MODELS) $(CONSENSUS_METRICS) $(NODE_STAMP)
	@echo "==> set-up complete: .venv, packages, data, models, Node packages"

## Print the shell line that puts the tools on PATH: eval "$(make -s env)"
env:
	@echo 'export PATH="$(CURDIR)/$(VENV)/bin:$$PATH"'

$(PY):
	$(call step,environment: a virtualenv in $(VENV) ($(PYTHON) -m venv),first time only: about 5 s)
	$(PYTHON) -m venv $(VENV)

# The scripts are copied into the venv at install: a changed one is installed again.
$(PIP_STAMP): pyproject.toml constraints.txt expertd/scripts/expertd expertd/scripts/expertd-pipe | $(PY)
	$(call step,packages: the pinned Python packages (TensorFlow included),first time: 1-2 minutes and about 1.6 GB)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --config-settings editable_mode=compat -e '.[models,test,postgresql,tracing]'
	@touch $@
	$(PATH_HINT)

## The training data: VADER's ground truth, from the vaderSentiment sdist (pip download).
data: $(DATA)
$(DATA): | $(PIP_STAMP)
	$(call step,data: the VADER ground truth (pip download of the vaderSentiment 3.3.2 sdist),first time: about 10 s; cached in data/)
	$(PY) -c 'from expertd.experts.data import fetch_ground_truth; print("   ", fetch_ground_truth("data"))'

## Train the default models that are missing or out of date (reproducible: fixed seeds and split).
models: $(PIP_STAMP) $(DATA)
	$(PY) -m expertd.experts.train --data-dir data --out models
	$(PY) -m expertd.experts.consensus --evaluate --data-dir data --models models

# experts/train.py is a prerequisite: after a change to it, python -m expertd.experts.train trains
# again each model whose metrics.json records another recipe, keeps the others, and the
# files are touched once checked against it.
$(MODELS) &: experts/train.py | $(PIP_STAMP) $(DATA)
	$(call step,training: the default models sentiment and genre (python -m expertd.experts.train),first time: about a minute on 2 cores)
	$(PY) -m expertd.experts.train --data-dir data --out models
	@touch $(MODELS)

$(CONSENSUS_METRICS): $(MODELS) experts/consensus.py
	$(PY) -m expertd.experts.consensus --evaluate --data-dir data --models models

$(NODE_STAMP): express_bridge/package.json express_bridge/package-lock.json
	$(call step,Node packages: those of the HTTP bridge (npm ci),first time: about 20 s)
	npm ci --silent --no-audit --no-fund --prefix express_bridge

## Benchmarks: writes bench/RESULTS.md and bench/RESULTS-*.md (installs wrk, libev-dev, haproxy, postgresql and podman from Debian if missing).
bench: setup $(HAPROXY) $(POSTGRES) $(PODMAN)
	bash bench/setup.sh
	$(PY) -m bench.learning
	$(PY) -m bench.learning_pg
	$(PY) -m bench.curve
	$(PY) -m bench.chains
	$(PY) -m bench.shadow
	$(PY) -m bench.scale
	$(MAKE) $(NODE_STAMP)
	$(PY) -m bench.overload
	$(PY) -m bench.bridge_pool
	$(PY) -m bench.own_expert
	$(PY) -m bench.deploy --image  # the systemd unit, the image built from nothing (minutes)
	$(PY) -m bench.image_cache  # the image test from an empty cache, after a Python-only change, unchanged
	$(PY) -m bench.startup --baseline af8e17c  # the code before issue 28
	$(PY) -m bench.cache
	$(PY) -m bench.model_threads  # one process: TensorFlow's pool sizes, expertd's vs its default
	$(MAKE) $(PROFILE_STAMP)
	$(PY) -m bench.profile_batch --baseline af8e17c
	$(PY) -m bench.memory_ready
	$(PY) -m bench.limits  # the floors under issue 28's targets: the transport and the model alone
	$(PY) -m bench.run  # last: RESULTS.md copies the other reports' headlines
	$(PY) -m bench.quote  # the numbers README.md and docs/ quote, from the new reports

## py-spy (bench.profile_batch) lives in its own venv (.venv-profile, exact pin in bench/requirements-profile.txt).
$(PROFILE_STAMP): bench/requirements-profile.txt
	$(call step,profiler: py-spy in $(PROFILE_VENV) (bench/requirements-profile.txt),first time: about 5 s)
	$(PYTHON) -m venv $(PROFILE_VENV)
	$(PROFILE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-profile.txt
	@touch $@

clean:
	rm -rf $(VENV) $(DOCS_VENV) $(AIRFLOW_VENV) $(DEPLOY_VENV) $(PROFILE_VENV) build/image site express_bridge/node_modules models data
