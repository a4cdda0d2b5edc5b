# Two commands on a fresh Debian machine (as root): `make run` and `make test`.
# Each installs what it needs: the virtualenv with the pinned packages, and Debian's
# dataset-fashion-mnist (the embedded default data) when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR := /usr/share/datasets/fashion-mnist
# Where `make run` writes everything (shards, models, prediction tables, report).
RUN_DIR ?= runs/local

.PHONY: install bytecode data browser run report test test-fast lint format schema-docs clean tools container-test pipelines images

install: $(VENV)/.installed bytecode data

# Re-installs when the dependencies change; requirements.lock pins every transitive
# package to the versions tested together (regenerate with `make lock`).
$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "installing the pinned packages into $(VENV) (first run: a few minutes)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	@touch $@

# The project's own modules compiled to bytecode, as pip does for an installed package (the
# container image): the editable install imports them from source, and where
# PYTHONDONTWRITEBYTECODE is set every `fmnist` process would compile them again (≈ 35 ms of
# each run's start). Only changed files are compiled; a stale file is simply compiled again.
bytecode: $(VENV)/.installed
	@$(BIN)/python -m compileall -q components jobs >/dev/null

data:
	@test -d $(DATA_DIR) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }

# Headless Chromium (Debian's package) for the test that renders the HTML report.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lock: $(VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

# The demo: one line per step, then the report's summary ending with the test accuracy and
# the report's path. Each step's JSON result (the machine-readable contract) goes to
# $(RUN_DIR)/<step>.json and training's per-epoch log to $(RUN_DIR)/train.log.
# score runs after train (it scores with the model train published under $(RUN_DIR)/models);
# a fixed run id makes a rerun replace the previous run's rows instead of adding to them.
run: install
	@mkdir -p $(RUN_DIR)
	@echo "1/4 prepare: the Fashion-MNIST IDX files -> image shards"
	@$(BIN)/fmnist prepare --output $(RUN_DIR)/shards --overwrite > $(RUN_DIR)/prepare.json
	@echo "2/4 train: about a minute; per-epoch log in $(RUN_DIR)/train.log"
	@$(BIN)/fmnist train --data $(RUN_DIR)/shards --model-root $(RUN_DIR)/models > $(RUN_DIR)/train.json 2> $(RUN_DIR)/train.log \
		|| { status=$$?; cat $(RUN_DIR)/train.log; exit $$status; }
	@tail -n 1 $(RUN_DIR)/train.log
	@echo "3/4 score: the test shards -> prediction tables"
	@$(BIN)/fmnist score --input '$(RUN_DIR)/shards/test-*.tfrecord' --model $(RUN_DIR)/models --output $(RUN_DIR)/scores --run-id local > $(RUN_DIR)/score.json
	@echo "4/4 report"
	@# The summary's first two lines, its accuracy line and the report's path (the class table
	@# is in the report; the last line, the JSON result, is for machines).
	@set -o pipefail; $(BIN)/fmnist report --scores $(RUN_DIR)/scores --out $(RUN_DIR)/report \
		| sed '$$d' | awk 'NR <= 2 { print; next } { before = last; last = $$0 } END { print before; print last }'

# The analysts' report of the latest scoring run in $(RUN_DIR)/scores.
report: install
	$(BIN)/fmnist report --scores $(RUN_DIR)/scores --out $(RUN_DIR)/report

test: install browser tools lint
	$(BIN)/python -m pytest

# The edit loop (under a minute): lint, then the unit tests; no slow, integration, browser or image tests.
test-fast: install lint
	$(BIN)/python -m pytest -q -m "not slow and not integration" --ignore=tests/test_report_browser.py --ignore=tests/test_container.py

# ruff: the lint rules and the formatting configured in pyproject.toml (`make format` applies them).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# checkov (policy checks of infra/ and the Dockerfile, run by tests/test_infra.py) has its own
# virtualenv: its dependencies conflict with the project's. shellcheck (Debian) checks build.sh;
# faketime (Debian) runs a lease taker whose clock is off (tests/test_lease.py). zetasql
# (GoogleSQL's analyzer, for the BigQuery examples of docs/analysts.md) pulls protobuf 7, which
# Beam and kfp refuse: it goes into a folder of its own that only tests/zetasql_analysis.py uses.
TOOLS_VENV ?= .venv-tools
CHECKOV_VERSION ?= 3.3.30
ZETASQL_FOLDER ?= .venv-zetasql
ZETASQL_VERSION ?= 0.1.5
tools: $(TOOLS_VENV)/.installed $(ZETASQL_FOLDER)/.installed
	@command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; }
	@command -v faketime >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime; }
$(TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@
$(ZETASQL_FOLDER)/.installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --target $(ZETASQL_FOLDER) zetasql==$(ZETASQL_VERSION)
	touch $@

# Builds the one image with buildah (installs buildah/debootstrap and bootstraps the
# debian:bookworm-slim base when missing), then runs prepare -> train -> score inside it as
# the image's non-root user (tests/test_container.py). Needs root.
IMAGE ?= localhost/fmnist-jobs:dev
container-test: install
	IMAGE=$(IMAGE) infra/container/build.sh
	FMNIST_CONTAINER_TEST=1 FMNIST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -v -s -rs tests/test_container.py

# The release images: jobs and its Dataflow worker target, tagged <version>-<commit>-<build time>
# (a new tag each run: the repository's tags are immutable), pushed to REGISTRY when given
# (terraform's image_repository output, e.g. europe-west4-docker.pkg.dev/acme-ml/fmnist); prints
# the digests as the pipelines' image= and worker_image= parameters. DRY_RUN=1 prints the commands.
REGISTRY ?=
images:
	infra/container/build.sh --release $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(DRY_RUN),--dry-run)

# Recompiles the KFP specs in infra/kfp/ (a test fails when the committed ones are stale).
pipelines: $(VENV)/.installed
	$(BIN)/fmnist pipeline compile

# Rewrites the files generated from components/contracts/schema.py (a test fails when they are stale).
schema-docs: $(VENV)/.installed
	$(BIN)/python -m components.analysts.schema_docs

clean:
	rm -rf $(RUN_DIR)
