# Choose a mask per (experiment, method, target). random_search waits for gat_ppo's search of the same
# target: it evaluates as many masks as the agent did (the equal-budget control).


def search_inputs(wildcards):
    inputs = {"model": RESULTS.baseline_model(), "graph": RESULTS.graph()}
    experiment = GRAPHPRUNE_CONFIG.experiment(wildcards.experiment)
    if wildcards.method == "random_search" and "gat_ppo" in experiment.methods \
            and "num_masks" not in experiment.method_settings("random_search"):
        inputs["agent_record"] = RESULTS.search_record("gat_ppo", wildcards.target)
    return {k: v.format(experiment=wildcards.experiment) for k, v in inputs.items()}


def search_hash(wildcards):
    """A rule param: reruns a search exactly when its method's masks would change."""
    return GRAPHPRUNE_CONFIG.experiment(wildcards.experiment).search_hash(wildcards.method)


rule search:
    input:
        unpack(search_inputs),
    output:
        mask=RESULTS.mask("{method}", "{target}"),
        record=RESULTS.search_record("{method}", "{target}"),
    params:
        search_hash=search_hash,
    log:
        RESULTS.log("search", "{method}", "{target}"),
    benchmark:
        RESULTS.benchmark("search", "{method}", "{target}")
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "{GRAPHPRUNE:q} search --config {RESOLVED_CONFIG:q} --experiment {wildcards.experiment:q}"
        " --method {wildcards.method:q} --target {wildcards.target:q} > {log:q} 2>&1"
