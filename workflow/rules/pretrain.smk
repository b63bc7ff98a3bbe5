# Train each experiment's baseline network.


rule pretrain:
    output:
        model=RESULTS.baseline_model(),
        metrics=RESULTS.baseline_metrics(),
        history=RESULTS.baseline_history(),
    params:
        # Snakemake reruns the job exactly when the experiment's baseline would change.
        config_hash=lambda wildcards: GRAPHPRUNE_CONFIG.experiment(wildcards.experiment).pretrain_hash,
    log:
        RESULTS.log("pretrain"),
    benchmark:
        RESULTS.benchmark("pretrain")
    threads: ALL_CORES
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=24 * 60,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune pretrain --experiment {wildcards.experiment:q}"
        " --threads {threads} > {log:q} 2>&1"
