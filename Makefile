# One-command set-up: `make run` and `make test` create .venv (if missing), install the package
# editable with its dependencies (torch 2.14.1 / torchvision 0.29.1 come from this machine's disk),
# then run. Extra Hydra overrides go in ARGS, e.g. `make run ARGS="method=supervised"`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
BENCH_OUT ?= outputs/bench.json
# Idle OpenMP threads sleep instead of spinning (see labelmatch/__init__.py): on a shared CPU,
# spinning made training steps up to 10x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test lint format bench bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

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

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
