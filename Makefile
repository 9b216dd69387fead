# Two commands do everything: `make demo` and `make test`. Each creates .venv when needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: install demo test lint bench
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/coalmine demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy coalmine
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy coalmine

bench: $(STAMP)
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/analysis.py
