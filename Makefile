# make run: the whole pipeline (Snakemake); make test: the test suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint clean

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

# --compile-bytecode: imports stay fast even where PYTHONDONTWRITEBYTECODE stops Python caching them.
$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python --no-deps -e .
	touch $@

# Caches and build leftovers only; results/, logs/ and .snakemake/ (pipeline state) stay.
clean:
	rm -rf .pytest_cache .ruff_cache bench/out src/*.egg-info
	find src tests bench -name __pycache__ -type d -prune -exec rm -rf {} +
