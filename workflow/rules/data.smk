# Data: the embedded synthetic benchmark and the ICS relabelling of any dataset.


rule synthesize:
    output:
        spec=f"{config['dataset']['root']}/spec.json",
        captions=f"{config['dataset']['root']}/captions.parquet",
    log:
        f"{LOGS}/synthesize.log",
    benchmark:
        benchmark_file("synthesize")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json(*SYNTHESIZE_KEYS),
    shell:
        "{params.launch} synthesize --set {params.cfg} --stage-keys --log {log}"


rule ics:
    input:
        dataset_inputs(),
    output:
        train=f"{RESULTS}/ics/train.parquet",
        truth=f"{RESULTS}/ics/train_truth.parquet",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
        summary=f"{RESULTS}/ics/summary.json",
    log:
        f"{LOGS}/ics.log",
    benchmark:
        benchmark_file("ics")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json(*ICS_KEYS),
        out_dir=output_folder("train"),
    shell:
        "{params.launch} ics --set {params.cfg} --stage-keys --out-dir {params.out_dir} --log {log}"


# The DG mode (dataset.format: pooled): each synthetic domain rendered on its own, and each
# held-out target's query and gallery tables (its training split is never written).
rule synthesize_domain:
    output:
        spec=f"{config['dataset']['root']}/{{domain}}/spec.json",
        captions=f"{config['dataset']['root']}/{{domain}}/captions.parquet",
    log:
        f"{LOGS}/synthesize_{{domain}}.log",
    benchmark:
        benchmark_file("synthesize_{domain}")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=domain_keys,
    shell:
        "{params.launch} synthesize --set {params.cfg} --stage-keys --domain {wildcards.domain} "
        "--log {log}"


rule dg_target:
    input:
        target_inputs,
    output:
        query=f"{RESULTS}/targets/{{target}}/query.parquet",
        gallery=f"{RESULTS}/targets/{{target}}/gallery.parquet",
        summary=f"{RESULTS}/targets/{{target}}/summary.json",
    log:
        f"{LOGS}/dg_target_{{target}}.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=domain_keys,
        out_dir=output_folder("query"),
    shell:
        "{params.launch} dg-target --set {params.cfg} --stage-keys --target {wildcards.target} "
        "--out-dir {params.out_dir} > {log} 2>&1"
