# Two entry points for a fresh clone: `make repro` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC must not phone home: the default run and the tests are offline.
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install repro check test bench export clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: install
	dvc repro

# After `make repro`: the committed run's bytes (identical), its results within the tolerance (within
# tolerance), or neither (differs, exit 1); see src/inat_classifier/check.py.
check: install
	inat-classifier check

# Two workers, one test file each at a time: the slow pipeline file runs beside the rest.
# TensorFlow rounds (and has crashed) differently per CPU: every test runs with oneDNN's kernels forced
# on, as on current servers, then the tests of distribution, params and the pipeline again without
# them (Eigen's kernels, as on older CPUs), whatever this machine's CPU would pick.
NUMERICS_TESTS := tests/test_distribute.py tests/test_params.py tests/test_pipeline.py tests/test_dataset.py
test: install
	TF_ENABLE_ONEDNN_OPTS=1 python -m pytest -n 2 --dist loadfile
	TF_ENABLE_ONEDNN_OPTS=0 python -m pytest -n 2 --dist loadfile $(NUMERICS_TESTS)

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
