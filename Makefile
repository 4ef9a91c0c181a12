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

# The main job: score the committed digits zoo (model_zoos/digits) and write its report; it
# reproduces reports/example/ on any CPU (building the zoo again would train it, and training
# differs between CPU types).
demo: setup
	$(BIN)/pgen score model_zoos/digits --out reports/digits --color-by arch

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/pvector.py
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .pytest_cache
