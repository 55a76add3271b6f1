# Two commands that work on a fresh machine with only Python and pip:
#   make demo   # venv + install + the offline quickstart (synthetic shapes, CPU, ~5 min)
#   make test   # venv + install (with test extras) + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-timm test-long install clean mutation docs lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the package metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

# timm's model tests over the whole registry (`make test` runs them on one small model per family).
test-timm: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m timm_full tests/models/test_timm_models.py

# The longer runs `make test` leaves out, so that it stays under 10 min on 2 cores (CI runs both): the benchmark tools
# end to end (speed, pixel, compiled, limit, gpu-suite at toy sizes; marker bench) and DDP with two processes (slow).
test-long: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "bench or slow"

# The docs site (mkdocs-material + mkdocstrings) into site/, offline, warnings as errors; sources in docs/.
$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	$(BIN)/python -m mkdocs build --strict --clean

# Mutation check, not part of `make test` (minutes): which single-change mutants of MODULE do its tests catch?
#   make mutation MODULE=vision_attn/attention/core.py [TESTS="tests/attention/test_core.py ..."] [ARGS="--max-mutants 100 --seed 0"]
mutation: $(VENV)/.installed-dev
	$(if $(MODULE),,$(error usage: make mutation MODULE=path/to/module.py [TESTS="test files or node ids"] [ARGS=...]))
	$(BIN)/python -m dev.mutation $(MODULE) $(if $(TESTS),--tests "$(TESTS)") $(ARGS)

# Lint: ruff (rules and format check: everything), mypy (floors 1-3), the floor and the function-length checkers.
# `ruff format --check` fails until the tree has been formatted once (`ruff format .`); the other checks pass.
LINT_STAMP = $(VENV)/.installed-lint
$(LINT_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev,lint]"
	touch $(VENV)/.installed $(VENV)/.installed-dev $@

lint: $(LINT_STAMP)
	@status=0; \
	$(BIN)/python -m ruff check . || status=1; \
	$(BIN)/python -m ruff format --check . || status=1; \
	$(BIN)/python -m mypy || status=1; \
	$(BIN)/python dev/check_floors.py || status=1; \
	$(BIN)/python dev/check_function_length.py || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache site
