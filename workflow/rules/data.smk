# Data: the embedded synthetic benchmark and the ICS relabelling of any dataset.


rule synthesize:
    output:
        spec=f"{config['dataset']['root']}/spec.json",
        captions=f"{config['dataset']['root']}/captions.parquet",
    params:
        cfg=cfg_json(*SYNTHESIZE_KEYS),
    log:
        f"{LOGS}/synthesize.log",
    benchmark:
        benchmark_file("synthesize")
    shell:
        "{CCAFL} synthesize --set {params.cfg} --stage-keys --log {log}"


rule ics:
    input:
        dataset_inputs(),
    output:
        train=f"{RESULTS}/ics/train.parquet",
        truth=f"{RESULTS}/ics/train_truth.parquet",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
        summary=f"{RESULTS}/ics/summary.json",
    params:
        cfg=cfg_json(*ICS_KEYS),
        out_dir=f"{RESULTS}/ics",
    log:
        f"{LOGS}/ics.log",
    benchmark:
        benchmark_file("ics")
    shell:
        "{CCAFL} ics --set {params.cfg} --stage-keys --out-dir {params.out_dir} --log {log}"
