# Train the config's shared agents (config `agents`) on their experiments' baselines and graphs; the searches of
# method gat_ppo_transfer read them (docs/TRANSFER.md).


rule train_agent:
    input:
        models=lambda w: GRAPHPRUNE_CONFIG.agent_inputs(w.agent)[0],
        graphs=lambda w: GRAPHPRUNE_CONFIG.agent_inputs(w.agent)[1],
    output:
        agent=agent_path(GRAPHPRUNE_CONFIG.results_dir, "{agent}"),
    params:
        # Retrains exactly when the agent would train differently (its networks, budgets, settings).
        training_hash=lambda w: GRAPHPRUNE_CONFIG.training_hash(w.agent),
    log:
        agent_log(GRAPHPRUNE_CONFIG.logs_dir, "{agent}"),
    benchmark:
        agent_log(GRAPHPRUNE_CONFIG.logs_dir, "{agent}", "benchmark.tsv")
    threads: 1
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=1440,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune train-agent --agent {wildcards.agent:q} --threads {threads} > {log:q} 2>&1"
