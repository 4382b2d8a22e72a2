# Evaluation under the Market-1501 protocol (mAP, mINP, CMC).


rule evaluate:
    input:
        model=f"{RESULTS}/final/model.pt",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
    output:
        metrics=f"{RESULTS}/eval/metrics.json",
        cmc=f"{RESULTS}/eval/cmc.parquet",
        features=f"{RESULTS}/eval/features.parquet",
    params:
        cfg=cfg_json("dataset", "input", "clip", "train", "eval"),
        ics_dir=f"{RESULTS}/ics",
        out_dir=f"{RESULTS}/eval",
    resources:
        gpu=GPUS,
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate.tsv"
    shell:
        "{CCAFL} evaluate --set {params.cfg} --model {input.model} --label CCAFL "
        "--ics-dir {params.ics_dir} --out-dir {params.out_dir} > {log} 2>&1"
