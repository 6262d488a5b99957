# Two entry points for a fresh clone: `make repro` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lock for this machine and why (scripts/choose_lock.sh): the CUDA build where nvidia-smi lists
# a GPU or GPU=1 is given (GPU=0: the CPU build), tensorflow on macOS arm64, tensorflow-cpu elsewhere.
CHOICE := $(shell GPU='$(GPU)' sh scripts/choose_lock.sh)
LOCK := $(or $(firstword $(CHOICE)),no-lock-for-this-machine)
# The stamp holds the name of the lock .venv was made from: another choice re-makes it.
STAMP := $(VENV)/.installed
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(LOCK))
.PHONY: $(STAMP)
endif
# Analytics and update checks are each user's choice, so .dvc/config leaves them alone; the pipeline and
# the tests run offline, so they send no analytics here. (DVC 3 checks for updates only in `dvc version`
# and `dvc doctor`; `dvc config --global core.check_update false` turns that off for a user.)
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install repro check report test bench export clean

install: $(STAMP)

# A .venv made from another lock holds the other TensorFlow wheel (tensorflow and tensorflow-cpu
# both own the `tensorflow` package), so it is made afresh; an empty stamp predates the choice.
# uv installs the lock: from its cache 3 s against pip's 20 s, and it downloads in parallel
# (docs/speed.md, wall time of the offline default). Like pip it uses PyPI unless told otherwise:
# UV_DEFAULT_INDEX (not pip.conf) names a mirror. A current pip stays for `make lock`.
# Byte-compiling the whole stack takes about 20 s, so Python is left to compile the modules a stage
# imports on first use, except where PYTHONDONTWRITEBYTECODE forbids it (as on this repository's build
# and CI machines): there every process would compile TensorFlow afresh, 11-14 s an import instead of 5.
UV_VERSION := 0.13.9
UV := $(BIN)/python -m uv pip install --quiet --python $(BIN)/python
COMPILE := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)
$(STAMP): $(LOCK) pyproject.toml
	@echo "install: $(LOCK) ($(wordlist 2,$(words $(CHOICE)),$(CHOICE)))"
	@if made=$$(cat $(STAMP) 2>/dev/null) && [ "$${made:-requirements.lock}" != "$(LOCK)" ]; then \
	  echo "install: $(VENV) was made from $${made:-requirements.lock}: making it afresh"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) $(COMPILE) -r $(LOCK) "pip>=24"
	$(UV) --no-deps --no-build-isolation -e .
	echo $(LOCK) > $(STAMP)

.PHONY: lock lock-check
# Rewrites the three locks from pyproject.toml, keeping today's pins (UPGRADE=1: newest versions that fit).
lock: install
	$(BIN)/python scripts/lock.py $(if $(filter 1,$(UPGRADE)),--upgrade)

# Resolves each lock for its own platform against the package index, installing nothing.
lock-check: install
	$(BIN)/python scripts/lock.py --check

repro: install
	dvc repro

# After `make repro`: the committed run's bytes (identical), its results within the tolerance (within
# tolerance), or neither (differs, exit 1); see src/inat_classifier/compare/check.py.
check: install
	inat-classifier check

# review/review.md for a pull request or CML comment: params and metrics diffs, the compare verdict and
# the plots against BASE (default main; BASE=HEAD~1, an experiment name, ...). .ci/cml-review.yml runs it.
BASE ?= main
report: install
	inat-classifier review --base $(BASE)

# Two workers, one test file each at a time: the slow pipeline file runs beside the rest.
# TensorFlow rounds (and has crashed) differently per CPU: every test runs with oneDNN's kernels forced
# on, as on current servers, then the tests of distribution, params and the pipeline again without
# them (Eigen's kernels, as on older CPUs), whatever this machine's CPU would pick; checks of DVC's
# workflow alone (marked `workflow`) do not depend on the kernels and run once.
# The slowest file (the pipeline's) is named first, so that it starts at once beside the others.
SLOWEST_FIRST := tests/test_pipeline.py $(filter-out tests/test_pipeline.py,$(sort $(wildcard tests/test_*.py)))
NUMERICS_TESTS := tests/test_pipeline.py tests/test_distribute.py tests/test_params.py tests/test_dataset.py
test: install
	TF_ENABLE_ONEDNN_OPTS=1 python -m pytest -n 2 --dist loadfile $(SLOWEST_FIRST)
	TF_ENABLE_ONEDNN_OPTS=0 python -m pytest -n 2 --dist loadfile -m "not workflow" $(NUMERICS_TESTS)

# SavedModel + TFLite, checked against the Keras model (not a DVC stage: SavedModel bytes vary per run);
# metrics/export.json is refused for a model other than the one dvc.lock pins. The report stage depends on
# it, so `dvc repro report` then renders the model card again with the figures (no model is rerun).
export: install
	inat-classifier export
	dvc repro report

# Speed at 224 px against the study's ImageDataGenerator (tf-keras, installed without its `tensorflow`
# requirement: tensorflow-cpu provides it), like for like per numerics setting, the levers for
# fine-tuning the whole base and the memory of its steps, then the default pipeline's wall time.
bench: install
	$(BIN)/python -m pip install --quiet --no-deps "tf-keras==2.21.0"
	python benchmarks/speed.py
	python benchmarks/finetune_levers.py
	python benchmarks/step_memory.py
	python benchmarks/augment_layers.py
	python benchmarks/pipeline.py
	python benchmarks/tfrecord.py

clean:
	rm -rf $(VENV)
