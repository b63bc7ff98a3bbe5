# Tables and figures over every experiment, method and target of the config; `snakemake --report` shows the
# figures with the captions in workflow/report/.
from graphprune.paths import REPORT_FIGURES, figure, report_benchmark, report_log, significance_csv, summary_csv, summary_md


rule report:
    input:
        baselines=expand(RESULTS.baseline_metrics(), experiment=EXPERIMENTS),
        records=[GRAPHPRUNE_CONFIG.paths(e).search_record(m, t, s) for e, m, t, s in GRAPHPRUNE_CONFIG.runs()],
        finetuned=[GRAPHPRUNE_CONFIG.paths(e).finetuned_metrics(m, t, s) for e, m, t, s in GRAPHPRUNE_CONFIG.runs()],
    output:
        csv=report(summary_csv(GRAPHPRUNE_CONFIG.results_dir), caption="../report/summary.rst", category="Tables"),
        md=summary_md(GRAPHPRUNE_CONFIG.results_dir),
        significance=significance_csv(GRAPHPRUNE_CONFIG.results_dir),
        **{
            name: report(figure(GRAPHPRUNE_CONFIG.results_dir, name), caption=f"../report/{name}.rst",
                         category="Figures")
            for name in REPORT_FIGURES
        },
    log:
        report_log(GRAPHPRUNE_CONFIG.logs_dir),
    benchmark:
        report_benchmark(GRAPHPRUNE_CONFIG.logs_dir)
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/graphprune.yaml"
    shell:
        "graphprune report > {log:q} 2>&1"
