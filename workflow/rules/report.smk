# Tables and figures over every experiment, method and target of the config; `snakemake --report` shows the
# figures with the captions in workflow/report/.
from graphprune.paths import REPORT_FIGURES, figure, report_benchmark, report_log, significance_csv, summary_csv, summary_md


def every_run(path_of):
    """`path_of(paths, method, target, seed)` for every experiment, method, target and seed of the config."""
    return [
        path_of(GRAPHPRUNE_CONFIG.paths(name), method, target, seed)
        for name, experiment in GRAPHPRUNE_CONFIG.experiments.items()
        for method, target, seed in experiment.runs()
    ]


rule report:
    input:
        baselines=expand(RESULTS.baseline_metrics(), experiment=EXPERIMENTS),
        records=every_run(lambda paths, method, target, seed: paths.search_record(method, target, seed)),
        finetuned=every_run(lambda paths, method, target, seed: paths.finetuned_metrics(method, target, seed)),
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
        report_log(),
    benchmark:
        report_benchmark()
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{GRAPHPRUNE:q} report --config {RESOLVED_CONFIG:q} > {log:q} 2>&1"
