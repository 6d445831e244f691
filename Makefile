# The README's commands. Each target creates the virtualenv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM_CLI_VERSION ?= 1.170.0
# `sam build` needs the target runtime's interpreter on PATH (no Docker here): python3.12.
PY312_DIR := $(shell ls -d $$HOME/.pyenv/versions/3.12*/bin /usr/local/bin 2>/dev/null | while read d; do [ -x $$d/python3.12 ] && echo $$d && break; done)
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 PATH=$(PY312_DIR):$$PATH $(SAM_VENV)/bin/sam

.PHONY: demo test test-fast lint serve bench build build-zip validate openapi clean help browser-deps java-deps

help:
	@echo "make demo     - run the demo end to end on the embedded local stack"
	@echo "make test     - run the whole test suite"
	@echo "make serve    - run the local stack in the foreground"
	@echo "make bench    - run the benchmarks (results in bench/results/)"
	@echo "make lint     - ruff, the import contracts (.importlinter) and mypy"
	@echo "make build    - sam build, everything (needs Docker for the analytics image; SAM CLI in $(SAM_VENV))"
	@echo "make build-zip - sam build of the zip functions and core layer only (no Docker; not deployable alone)"
	@echo "make openapi  - regenerate docs/openapi/*.json"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Extra flags of `customer-context demo`, e.g. make demo DEMO_FLAGS="--customers 200 --data-dir /tmp/demo"
DEMO_FLAGS ?=

demo: $(STAMP)
	$(BIN)/customer-context demo $(DEMO_FLAGS)

serve: $(STAMP)
	$(BIN)/customer-context serve

# Spark (tests/integration/test_spark_identity.py) binds to loopback only; its UI is off in the test session.
test: $(STAMP) $(SAM_VENV)/bin/sam browser-deps java-deps
	$(BIN)/ruff check layers devtools functions tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	SPARK_LOCAL_IP=127.0.0.1 $(BIN)/python -m pytest

test-fast: $(STAMP)
	SPARK_LOCAL_IP=127.0.0.1 $(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check layers devtools functions tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# Sizes S M L (~100k, 1M, 10M events); L needs ~10 GB free and takes long on 2 cores. Assembly runs under
# a lock so two benchmarks never build L at the same time. Extra flags, e.g.
#   make bench BENCH_SIZES="S M" BENCH_ASSEMBLE_FLAGS="--no-feast"
#   make bench BENCH_ASSEMBLE_FLAGS="--data-dir /tmp/cc-bench-data --l-from-m"   (reuse lakes; L = 10 copies of M)
BENCH_SIZES ?= S M L
BENCH_ASSEMBLE_FLAGS ?=
BENCH_LOCK ?= $(if $(shell command -v flock 2>/dev/null),flock /tmp/bench.lock,)

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BENCH_LOCK) $(BIN)/python bench/assemble.py --sizes $(BENCH_SIZES) $(BENCH_ASSEMBLE_FLAGS)
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/units.py
	if [ -f bench/load.py ]; then $(BIN)/python bench/load.py; fi
	if [ -f bench/package.py ]; then $(BIN)/python bench/package.py; fi
	$(BIN)/python bench/report.py

openapi: $(STAMP)
	mkdir -p docs/openapi
	for f in collect fetch_context query_context regulate; do $(BIN)/customer-context openapi $$f > docs/openapi/$$f.json; done

# The browser tests (tests/browser): Debian's Chromium (Playwright's own browser downloads are not used) and the
# SDKs from npm at the versions package-lock.json pins. Installing Chromium needs root (as in CI).
CHROMIUM := /usr/bin/chromium
BROWSER_TESTS := tests/browser

$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] || { echo "the browser tests need Chromium: sudo apt-get install chromium"; exit 2; }
	@echo "installing Debian's chromium for the browser tests"
	@export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }

$(BROWSER_TESTS)/node_modules/.package-lock.json: $(BROWSER_TESTS)/package.json $(BROWSER_TESTS)/package-lock.json
	cd $(BROWSER_TESTS) && npm ci --silent --no-audit --no-fund

browser-deps: $(CHROMIUM) $(BROWSER_TESTS)/node_modules/.package-lock.json

# The Spark tests: pyspark comes with the dev extras (its jars included); Spark runs on a JVM. Without `java`,
# Debian's headless JRE 17 is installed (needs root, as in CI).
java-deps:
	@command -v java >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "the Spark tests need Java 17: sudo apt-get install openjdk-17-jre-headless"; exit 2; }; \
	  echo "installing Debian's openjdk-17-jre-headless for the Spark tests"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq openjdk-17-jre-headless >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }; }

# The SAM CLI lives in its own virtualenv: its exact pins (boto3, click, pydantic) would
# otherwise downgrade the project's own dependencies.
$(SAM_VENV)/bin/sam:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet "aws-sam-cli==$(SAM_CLI_VERSION)"

validate: $(SAM_VENV)/bin/sam
	$(SAM) validate --lint

# The spec ships in the layer: a mistake in it must stop the build, not fail every request once deployed.
# A full build needs Docker: the six analytics functions are one container image. Without Docker it stops
# (a deploy without the image would have no ingest, build or deletion) and says where to build instead.
IMAGE_FUNCTIONS := Ingest LoadRecords BuildContext QueryContext Regulate Maintain

build: $(STAMP) $(SAM_VENV)/bin/sam
	$(BIN)/customer-context spec check
	@docker info >/dev/null 2>&1 || { \
	  echo "make build: Docker is not running here, and a full build needs it: ingest, load_records, build_context,"; \
	  echo "query_context, regulate and maintain are one container image (layers/analytics/Dockerfile) that sam build"; \
	  echo "builds with Docker. Build and deploy from a machine with Docker (a workstation, a CI runner, AWS CloudShell"; \
	  echo "with Docker, an EC2 instance): make build && .venv-sam/bin/sam deploy --config-env dev."; \
	  echo "To check only the zip functions (collect, fetch_context) and the core layer here: make build-zip"; \
	  exit 2; }
	@if [ -n "$(PY312_DIR)" ]; then $(SAM) build; else $(SAM) build --use-container; fi

# A partial build, not deployable: the zip functions and the core layer, without Docker (needs python3.12).
build-zip: $(STAMP) $(SAM_VENV)/bin/sam
	$(BIN)/customer-context spec check
	@[ -n "$(PY312_DIR)" ] || { echo "sam build needs python3.12 on this machine (no Docker): install it, e.g. pyenv install 3.12"; exit 2; }
	@echo "Partial build: collect, fetch_context and the core layer only (no analytics image): not deployable as is."
	$(SAM) build $(foreach f,$(IMAGE_FUNCTIONS),--exclude $(f)Function)

clean:
	rm -rf .customer-context .aws-sam .pytest_cache
