# The two commands a newcomer types: `make demo` and `make test`. Both create the virtual
# environment from the pinned versions (constraints.txt) when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FRAMEWORK ?= pt
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow demo demo-quick bench clean

setup: $(STAMP)

# Idempotent: re-runs only when the pins or the project metadata change.
$(STAMP): constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[torch,tf,demo,dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: setup
	$(PY) -m demo.run --framework $(FRAMEWORK) $(DEMO_ARGS)

demo-quick: setup
	$(PY) -m demo.run --framework $(FRAMEWORK) --quick

bench: setup
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
