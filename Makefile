# One-command set-up: `make run` and `make test` create .venv (if missing), install the package
# editable with its dependencies (torch 2.14.1 / torchvision 0.29.1 come from this machine's disk),
# then run. Extra Hydra overrides go in ARGS, e.g. `make run ARGS="method=supervised"`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test lint format bench-quality clean

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

# Quality benchmark (not a test): supervised, mean_teacher and labelmatch at the same step budget
# and seeds; writes its section of docs/benchmarks.md. E.g. make bench-quality ARGS="--reuse".
bench-quality: $(STAMP)
	$(PY) benchmarks/quality.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
