# Data: the embedded synthetic benchmark and the ICS relabelling of any dataset.


rule synthesize:
    output:
        spec=f"{config['dataset']['root']}/spec.json",
        captions=f"{config['dataset']['root']}/captions.parquet",
    params:
        cfg=cfg_json("dataset", "synthetic"),
    log:
        f"{LOGS}/synthesize.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize.tsv"
    shell:
        "{CCAFL} synthesize --set {params.cfg} --log {log}"


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
        cfg=cfg_json("dataset"),
        out_dir=f"{RESULTS}/ics",
    log:
        f"{LOGS}/ics.log",
    benchmark:
        f"{RESULTS}/benchmarks/ics.tsv"
    shell:
        "{CCAFL} ics --set {params.cfg} --out-dir {params.out_dir} --log {log}"
