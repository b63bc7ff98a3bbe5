# Train the config's shared agents (config `agents`) on their experiments' baselines and graphs; the searches of
# method gat_ppo_transfer read them (docs/TRANSFER.md).


rule train_agent:
    input:
        models=lambda w: agent_inputs(w.agent, "baseline_model"),
        graphs=lambda w: agent_inputs(w.agent, "graph"),
    output:
        agent=agent_path(GRAPHPRUNE_CONFIG.results_dir, "{agent}"),
    params:
        # Retrains exactly when the agent would train differently (its networks, budgets, settings).
        training_hash=lambda w: GRAPHPRUNE_CONFIG.training_hash(w.agent),
    log:
        posixpath.join(GRAPHPRUNE_CONFIG.logs_dir, "agents", "{agent}.log"),
    benchmark:
        posixpath.join(GRAPHPRUNE_CONFIG.logs_dir, "agents", "{agent}.benchmark.tsv")
    threads: 1
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
        runtime=1440,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune train-agent --agent {wildcards.agent:q} --threads {threads} > {log:q} 2>&1"
