"""Reading the config must not import torch: Snakemake imports the config code on every call, even `-n`.

The plain-data halves of the heavy modules (atomic writers, ModelSpec, TrainRecipe, dataset settings, the
method index) live in torch-free modules and are re-exported from their old homes; these tests keep it so.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import graphprune.atomic
import graphprune.data.datasets
import graphprune.methods.index
import graphprune.models.spec
import graphprune.recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "torch_geometric", "tianshou")


def printed_by(script: str):
    """What a Python script run in a fresh process (this checkout's package first on the path) prints last, as
    JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _workflow_imports() -> set[str]:
    """The graphprune modules the Snakefile and its rule files import while Snakemake parses them."""
    sources = [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow").rglob("*.smk"))]
    pattern = re.compile(r"^\s*(?:from|import)\s+(graphprune(?:\.\w+)*)", re.MULTILINE)
    return {module for source in sources for module in pattern.findall(source.read_text())}


def test_the_workflow_imports_the_config_code():
    assert {"graphprune.config", "graphprune.paths"} <= _workflow_imports()


def test_reading_the_config_imports_no_torch(tmp_path):
    modules = sorted(_workflow_imports() | {"graphprune", "graphprune.config", "graphprune.paths"})
    # What Snakemake does at parse time: load, check and write the resolved config.
    script = f"""
import importlib, json, sys
for module in {modules!r}:
    importlib.import_module(module)
from graphprune.config import load_config, write_resolved_config
import yaml
config = load_config({str(REPO_ROOT / "config.yaml")!r})
write_resolved_config(yaml.safe_load(open({str(REPO_ROOT / "config.yaml")!r})), {str(tmp_path)!r})
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})))
"""
    assert printed_by(script) == []


def test_old_homes_re_export_the_torch_free_definitions():
    from graphprune import checkpoint, models, train
    from graphprune.data import splits as data
    from graphprune.methods import base

    assert checkpoint.atomic_write_text is graphprune.atomic.atomic_write_text
    assert checkpoint.atomic_write_json is graphprune.atomic.atomic_write_json
    assert models.ModelSpec is graphprune.models.spec.ModelSpec
    assert train.TrainRecipe is graphprune.recipe.TrainRecipe
    assert data.DatasetSettings is graphprune.data.datasets.DatasetSettings
    assert data.DatasetInfo is graphprune.data.datasets.DatasetInfo
    assert data.dataset_info is graphprune.data.datasets.dataset_info
    assert data.DATASETS is graphprune.data.datasets.DATASETS
    for name in data.DATASETS:  # every entry names a loader that exists
        assert callable(graphprune.data.datasets.dataset_loader(name))
    # The config checks names against the torch-free index; the registry must agree with it.
    assert base.METHOD_MODULES == graphprune.methods.index.METHOD_MODULES


def test_the_stages_of_a_heuristic_run_on_digits_import_no_torchvision_pyg_or_tianshou():
    """Each pipeline job is a process of its own; torchvision (~2 s, it loads torch._dynamo), torch-geometric
    (~3 s), Tianshou (~2 s) and scikit-learn's datasets (~2 s) are imported only by the jobs that use them
    (graph, the RL methods, torchvision datasets and models), not by pretraining, fine-tuning or the heuristics
    on digits."""
    script = """
import json, sys
import graphprune.stages.finetune, graphprune.stages.pretrain, graphprune.stages.search
from graphprune.config import load_config
from graphprune.data.splits import load_splits
from graphprune.methods import get_method
from graphprune.models import ModelSpec, build_model
experiment = load_config("config.yaml").experiment("digits-resnet20")
assert experiment.dataset.name == "digits"
load_splits(experiment.dataset)
build_model(ModelSpec(name="resnet20", num_classes=10, in_channels=1, input_size=8))
for method in ("l1_uniform", "random_search", "l1_ratio_search", "depgraph", "global_bn", "random"):
    get_method(method)
skipped = {"torchvision", "torch_geometric", "tianshou", "sklearn"}
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & skipped)))
"""
    assert printed_by(script) == []


def test_the_report_imports_no_torch():
    """The report job reads result files and draws figures: importing torch (~2 s) would be a third of it."""
    script = f"""
import json, sys
import graphprune.cli, graphprune.commands.report, graphprune.stages.report
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})))
"""
    assert printed_by(script) == []
