# graphprune pipeline: pretrain -> graph -> search -> fine-tune -> report, one rule file per phase.
# Rules only call the `graphprune` CLI; paths come from graphprune.paths. Run: snakemake --cores all
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/agent.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


# The report pulls in every experiment's baseline, graph, masks and fine-tuned networks.
rule all:
    default_target: True
    input:
        rules.report.output,
