# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates its own virtual environment in .venv (reused when it is up to date).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,parquet,ray]'
	touch $@

setup: $(VENV)/.installed

# The main job: build the embedded digits zoo (if not cached), score it, write the report.
demo: setup
	$(BIN)/pgen score digits --out reports/digits

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/pvector.py
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .pytest_cache
