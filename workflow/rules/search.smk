# Choose a mask per (experiment, method, target, seed). Every search method scores the same number of distinct
# masks (search.evaluations), so no search waits for another.


rule search:
    input:
        model=RESULTS.baseline_model(),
        graph=RESULTS.graph(),
        agent=lambda w: GRAPHPRUNE_CONFIG.transfer_agent_files(w.experiment, w.method),
    output:
        mask=RESULTS.mask("{method}", "{target}", "{seed}"),
        record=RESULTS.search_record("{method}", "{target}", "{seed}"),
    params:
        # Reruns a search exactly when its method's masks would change.
        search_hash=lambda w: GRAPHPRUNE_CONFIG.experiment(w.experiment).search_hash(w.method, int(w.seed)),
    log:
        RESULTS.log("search", "{method}", "{target}", "{seed}"),
    benchmark:
        RESULTS.benchmark("search", "{method}", "{target}", "{seed}")
    # Long searches first (graphprune.methods.index.SEARCH_PRIORITY), so two cores stay busy to the end.
    priority: lambda w: search_priority(GRAPHPRUNE_CONFIG.experiment(w.experiment).base_method(w.method))
    threads: 1
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune search --experiment {wildcards.experiment:q}"
        " --method {wildcards.method:q} --target {wildcards.target:q} --seed {wildcards.seed}"
        " --threads {threads} > {log:q} 2>&1"
