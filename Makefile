# Two commands that work on a fresh machine with only Python and pip:
#   make demo   # venv + install + the offline quickstart (synthetic shapes, CPU, ~5 min)
#   make test   # venv + install (with test extras) + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install clean mutation

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

# Mutation check, not part of `make test` (minutes): which single-change mutants of MODULE do its tests catch?
#   make mutation MODULE=vision_attn/attention/core.py [TESTS="tests/attention/test_core.py ..."] [ARGS="--max-mutants 100 --seed 0"]
mutation: $(VENV)/.installed-dev
	$(if $(MODULE),,$(error usage: make mutation MODULE=path/to/module.py [TESTS="test files or node ids"] [ARGS=...]))
	$(BIN)/python tools/mutation.py $(MODULE) $(if $(TESTS),--tests "$(TESTS)") $(ARGS)

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
