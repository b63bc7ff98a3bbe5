# Train each experiment's baseline network.


rule pretrain:
    output:
        model=RESULTS.baseline_model(),
        metrics=RESULTS.baseline_metrics(),
        history=RESULTS.baseline_history(),
    params:
        config_hash=pretrain_hash,
    log:
        RESULTS.log("pretrain"),
    benchmark:
        RESULTS.benchmark("pretrain")
    threads: ALL_CORES
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=24 * 60,
    shell:
        "{GRAPHPRUNE:q} pretrain --config {RESOLVED_CONFIG:q} --experiment {wildcards.experiment:q}"
        " --threads {threads} > {log:q} 2>&1"
