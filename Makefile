# aib-sdk developer commands. `make demo` and `make test` set everything up themselves on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROVIDERS := $(sort $(dir $(wildcard providers/*/pyproject.toml)))
EXAMPLE_PROVIDERS := $(sort $(dir $(wildcard examples/*/pyproject.toml)))
STAMP := $(VENV)/.setup-stamp
SYSTEM_STAMP := .venv/.system-stamp

.PHONY: setup system-deps demo test test-fast bench lint docs clean

$(SYSTEM_STAMP): ci/apt-packages.txt $(wildcard providers/*/apt-packages*.txt) $(wildcard providers/*/npm-packages.txt)
	bash ci/install-system-deps
	@mkdir -p $(VENV) && touch $@

system-deps: $(SYSTEM_STAMP)

$(STAMP): pyproject.toml $(wildcard providers/*/pyproject.toml) $(wildcard examples/*/pyproject.toml) $(SYSTEM_STAMP)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,docs]' $(foreach p,$(PROVIDERS),-e '$(p:/=)[test]') $(foreach p,$(EXAMPLE_PROVIDERS),-e '$(p:/=)')
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python examples/demo.py

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not vm and not debian" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

docs: setup  # the site (API reference from docstrings) into site/, warnings as errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: setup
	$(BIN)/ruff check src providers tests benchmarks examples
	$(BIN)/ruff format --check src providers tests benchmarks examples
	MYPYPATH=$$(ls -d src providers/*/src | paste -sd:) $(BIN)/mypy -p aib_sdk $(foreach p,$(PROVIDERS),-p $(notdir $(wildcard $(p)src/aib_provider_*)))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache site
