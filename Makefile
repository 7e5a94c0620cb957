# One-command set-up: `make run` and `make test` create .venv (if missing), install exactly the
# dependency set of requirements.lock (the one CI last passed with; torch 2.14.1 / torchvision 0.29.1
# come from this machine's disk) and the package itself (editable), then run. Extra Hydra overrides
# go in ARGS, e.g. `make run ARGS="method=supervised"`. `make lock` refreshes requirements.lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# `make lock` takes the newest versions pyproject.toml's ranges allow; LOCK_ARGS= keeps the
# current pins and only adds what is new.
LOCK_ARGS ?= --upgrade
ARGS ?=
PYTEST_ARGS ?=
BENCH_OUT ?= outputs/bench.json
# Idle OpenMP threads sleep instead of spinning (see labelmatch/__init__.py): on a shared CPU,
# spinning made training steps up to 10x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install lock run test lint format bench bench-quality gpu-wheels gpu-pair clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges (with the dev and export extras) into requirements.lock, torch and
# torchvision held at the builds of lock-constraints.txt; then `make install` installs the new set.
lock: $(STAMP)
	$(PY) -m piptools compile --quiet --extra dev --extra export --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --constraint lock-constraints.txt \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

run: $(STAMP)
	$(PY) -m labelmatch.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check labelmatch tests benchmarks
	$(PY) -m ruff format --check labelmatch tests benchmarks

format: $(STAMP)
	$(PY) -m ruff format labelmatch tests benchmarks
	$(PY) -m ruff check --fix labelmatch tests benchmarks

# Speed benchmark (not a test, 7-8 min on a 2-core CPU): a LabelMatch step next to its floor, ACT,
# data loading, memory -> JSON in $(BENCH_OUT) and a table. ARGS="--docs docs/benchmarks.md"
# also rewrites its section of the docs.
bench: $(STAMP)
	$(PY) benchmarks/speed.py --out $(BENCH_OUT) $(ARGS)

# Quality benchmark (not a test): supervised, mean_teacher, labelmatch and labelmatch_online (online
# ACT) at the same step budget and seeds; writes its section of docs/benchmarks.md.
# E.g. make bench-quality ARGS="--reuse".
bench-quality: $(STAMP)
	$(PY) benchmarks/quality.py $(ARGS)

# The wheels benchmarks/gpu_check.sh installs on a lent GPU machine, whose image (Python 3.12,
# x86_64, no network) lacks Hydra and pycocotools: the versions of requirements.lock.
GPU_WHEELS := .cache/gpu-wheels
gpu-wheels: $(STAMP)
	$(PY) -m pip download --quiet --dest $(GPU_WHEELS) --no-deps --only-binary=:all: \
		--python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
		$$(grep -E '^(hydra-core|omegaconf|pycocotools)==' $(LOCK))
	$(PY) -m pip download --quiet --dest $(GPU_WHEELS) --no-deps --no-binary=:all: \
		$$(grep -E '^antlr4-python3-runtime==' $(LOCK))

# An earlier revision's tree, with this tree's speed.py, for benchmarks/gpu_speed_pair.sh.
BEFORE ?= 8d32376
gpu-pair: gpu-wheels
	rm -rf .cache/before && mkdir -p .cache/before
	git archive $(BEFORE) | tar -x -C .cache/before
	cp benchmarks/speed.py .cache/before/benchmarks/
	git rev-parse $(BEFORE) >.cache/before/REVISION

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
