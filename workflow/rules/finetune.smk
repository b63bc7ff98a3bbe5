# Fine-tune each (experiment, method, target, seed)'s pruned network with the experiment's one finetune recipe and
# measure it on the test split (accuracy before and after, cost, latency against the baseline).


rule finetune:
    input:
        model=RESULTS.baseline_model(),
        mask=RESULTS.mask("{method}", "{target}", "{seed}"),
        record=RESULTS.search_record("{method}", "{target}", "{seed}"),
    output:
        model=RESULTS.finetuned_model("{method}", "{target}", "{seed}"),
        metrics=RESULTS.finetuned_metrics("{method}", "{target}", "{seed}"),
        history=RESULTS.finetuned_history("{method}", "{target}", "{seed}"),
    params:
        # Reruns a fine-tune exactly when its mask or the finetune recipe would change.
        finetune_hash=lambda w: GRAPHPRUNE_CONFIG.experiment(w.experiment).finetune_hash(w.method, int(w.seed)),
    log:
        RESULTS.log("finetune", "{method}", "{target}", "{seed}"),
    benchmark:
        RESULTS.benchmark("finetune", "{method}", "{target}", "{seed}")
    threads: 1
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=12 * 60,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune finetune --experiment {wildcards.experiment:q}"
        " --method {wildcards.method:q} --target {wildcards.target:q} --seed {wildcards.seed}"
        " --threads {threads} > {log:q} 2>&1"
