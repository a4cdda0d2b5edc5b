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

.PHONY: install data run test clean

install: $(VENV)/.installed data

# Re-installs when the dependencies change; requirements.lock pins every transitive
# package to the versions tested together (regenerate with `make lock`).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

data:
	@test -d $(DATA_DIR) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }

lock: $(VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

run: install
	$(BIN)/fmnist prepare --output $(RUN_DIR)/shards --overwrite
	# score runs after train (it scores with the model train published under $(RUN_DIR)/models);
	# a fixed run id makes a rerun replace the previous run's rows instead of adding to them.
	$(BIN)/fmnist score --input '$(RUN_DIR)/shards/test-*.tfrecord' --model $(RUN_DIR)/models --output $(RUN_DIR)/scores --run-id local

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(RUN_DIR)
