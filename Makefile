# Two entry points for a fresh clone: `make repro` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC must not phone home: the default run and the tests are offline.
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install repro test bench export clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: install
	dvc repro

test: install
	python -m pytest

# SavedModel + TFLite, checked against the Keras model (not a DVC stage: SavedModel bytes vary per run)
export: install
	inat-classifier export

bench: install
	python benchmarks/pipeline.py

clean:
	rm -rf $(VENV)
