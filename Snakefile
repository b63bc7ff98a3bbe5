# graphprune pipeline: pretrain -> graph -> search -> fine-tune -> report, one rule file per phase.
# Rules only call the `graphprune` CLI; paths come from graphprune.paths. Run: snakemake --cores all
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/search.smk"


rule all:
    input:
        expand(RESULTS.baseline_metrics(), experiment=EXPERIMENTS),
        expand(RESULTS.graph(), experiment=EXPERIMENTS),
        [
            RESULTS.mask(method, target).format(experiment=name)
            for name, experiment in GRAPHPRUNE_CONFIG.experiments.items()
            for method in experiment.methods
            for target in experiment.targets
        ],
