# Extract each experiment's network graph (the agent's observation) from its trained baseline.


rule graph:
    input:
        model=RESULTS.baseline_model(),
    output:
        graph=RESULTS.graph(),
        summary=RESULTS.graph_summary(),
    log:
        RESULTS.log("graph"),
    benchmark:
        RESULTS.benchmark("graph")
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune graph --experiment {wildcards.experiment:q} > {log:q} 2>&1"
