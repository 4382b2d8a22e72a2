# The run's plots and tables, shown by `snakemake --report report.html`.


rule report:
    input:
        unpack(report_inputs),
    output:
        metrics=report_file("metrics.md", "metrics", "1. Results"),
        metrics_csv=f"{RESULTS}/report/metrics.csv",
        cmc=report_file("cmc.png", "cmc", "1. Results"),
        retrieval=report_file("retrieval.png", "retrieval", "1. Results"),
        tsne=report_file("tsne.png", "tsne", "1. Results"),
        association=report_file("association.png", "association", "2. Training"),
        losses=report_file("losses.png", "losses", "2. Training"),
        zero_shot=report_file("zero_shot.csv", "zero_shot", "2. Training"),
        timings=report_file("timings.png", "timings", "3. Cost"),
        timings_csv=report_file("timings.csv", "timings", "3. Cost"),
        page=f"{RESULTS}/report/index.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        benchmark_file("report")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json(*REPORT_KEYS),
        files=report_args,
        out_dir=output_folder("metrics_csv"),
    shell:
        "{params.launch} report --set {params.cfg} --stage-keys {params.files} --out-dir {params.out_dir} > {log} 2>&1"
