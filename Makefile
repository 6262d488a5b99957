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

.PHONY: lock lock-check
# Rewrites the three locks from pyproject.toml, keeping today's pins (UPGRADE=1: newest versions that fit).
lock: install
	$(BIN)/python scripts/lock.py $(if $(filter 1,$(UPGRADE)),--upgrade)

# Resolves each lock for its own platform against the package index, installing nothing.
lock-check: install
	$(BIN)/python scripts/lock.py --check

repro: install
	dvc repro

# Two workers, one test file each at a time: the slow pipeline file runs beside the rest.
test: install
	python -m pytest -n 2 --dist loadfile

# SavedModel + TFLite, checked against the Keras model (not a DVC stage: SavedModel bytes vary per run)
export: install
	inat-classifier export

# Speed at 224 px against the study's ImageDataGenerator (tf-keras, installed without its `tensorflow`
# requirement: tensorflow-cpu provides it), then the default pipeline's wall time.
bench: install
	$(BIN)/python -m pip install --quiet --no-deps "tf-keras==2.21.0"
	python benchmarks/speed.py
	python benchmarks/pipeline.py
	python benchmarks/tfrecord.py

clean:
	rm -rf $(VENV)
