# make run: the whole pipeline (Snakemake); make test: the test suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint clean

# The pipeline, then the HTML report of its figures and tables (results/report.html).
run: $(STAMP)
	$(VENV)/bin/snakemake --cores all
	$(VENV)/bin/snakemake --report results/report.html

test: $(STAMP)
	$(VENV)/bin/pytest -q

# In a fresh clone: fetch cached results from the DVC remote and mark them up to date (docs/PIPELINE.md);
# options via RESTORE_ARGS, e.g. make restore RESTORE_ARGS="--remote nas --configfile configs/x.yaml".
.PHONY: restore
restore: $(STAMP)
	$(VENV)/bin/graphprune restore $(RESTORE_ARGS)

# The pipeline on a throwaway one-node SLURM cluster (root on Debian; installs slurm + munge on first use):
# start it, run tests/cluster/tiny.yaml with every rule as a SLURM job, check outputs and a failing job, stop
# it, then the same config locally for the time comparison. Details: tests/cluster/run_pipeline.sh.
CLUSTER_TEST_TIMEOUT ?= 900
.PHONY: test-cluster
test-cluster: $(STAMP)
	timeout -k 30 -s INT $(CLUSTER_TEST_TIMEOUT) tests/cluster/run_pipeline.sh

# CUDA paths (tests marked cuda, AMP pretraining, CUDA latency, a gat_ppo search on CUDA vs CPU); says so and
# exits 0 on a machine without CUDA.
.PHONY: test-gpu
test-gpu: $(STAMP)
	cd bench && ../$(VENV)/bin/python gpu_check.py

# Fails on findings: ruff on the Python, Snakemake's linter on the workflow (it exits 1 when it has advice).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/snakemake --lint

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

# The Fashion-MNIST benchmark (every method, 2 targets, 3 seeds; under an hour on 2 CPU cores): results in
# results/bench/ (summary.md, significance.csv, figures/). Needs Debian's dataset-fashion-mnist (or download: true).
.PHONY: bench
bench: $(STAMP)
	$(VENV)/bin/snakemake --cores all --configfile configs/fashion-resnet20.yaml --replace-workflow-config
