# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates its own virtual environment in .venv (reused when it is up to date).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test docs browser bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,parquet,ray,docs]'
	touch $@

setup: $(VENV)/.installed

# The main job: score the committed digits zoo (model_zoos/digits) and write its report; it
# reproduces reports/example/ on any CPU (building the zoo again would train it, and training
# differs between CPU types).
demo: setup
	$(BIN)/pgen score model_zoos/digits --out reports/digits --color-by arch

# The suite, then the site with warnings as errors. tests/test_docs.py renders the site in
# headless Chromium: PGEN_REQUIRE_BROWSER makes a missing browser a failure, not a skip.
test: setup browser
	PGEN_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) docs

# The documentation site, from docs/ into site/ (not committed); strict: warnings fail it.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet
	@echo "site/index.html"

# Debian's Chromium for the browser test, installed where the machine lets us (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium and no way to install it here: install Debian's chromium package for tests/test_docs.py"

bench: setup
	$(BIN)/python benchmarks/pvector.py
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .pytest_cache site
