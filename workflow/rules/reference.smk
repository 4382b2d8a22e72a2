# Reference rows beside CCAFL: the pretrained CLIP with no ReID training, an untrained network
# of the same architecture (both per retrieval feature), and the true cross-camera labels that
# only the supervised reference run reads.


rule zeroshot:
    input:
        unpack(clip_input),
        train=f"{RESULTS}/ics/train.parquet",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
    output:
        metrics=f"{RESULTS}/reference/zeroshot.json",
    log:
        f"{LOGS}/zeroshot.log",
    benchmark:
        benchmark_file("zeroshot")
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
        loader_workers=loader_workers,
    params:
        launch=GPU_LAUNCH,
        cfg=cfg_json(*ZEROSHOT_KEYS),
        clip=clip_arg,
        ics_dir=input_folder("train"),
    shell:
        "{params.launch} reference --set {params.cfg} --stage-keys --loader-workers {resources.loader_workers} "
        "{params.clip} --ics-dir {params.ics_dir} --out {output.metrics} > {log} 2>&1"


rule untrained:
    input:
        train=f"{RESULTS}/ics/train.parquet",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
    output:
        metrics=f"{RESULTS}/reference/untrained.json",
    log:
        f"{LOGS}/untrained.log",
    benchmark:
        benchmark_file("untrained")
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
        loader_workers=loader_workers,
    params:
        launch=GPU_LAUNCH,
        cfg=cfg_json(*UNTRAINED_KEYS),
        ics_dir=input_folder("train"),
    shell:
        "{params.launch} reference --untrained --set {params.cfg} --stage-keys "
        "--loader-workers {resources.loader_workers} --ics-dir {params.ics_dir} "
        "--out {output.metrics} > {log} 2>&1"


rule supervised_labels:
    input:
        train=f"{RESULTS}/ics/train.parquet",
        truth=f"{RESULTS}/ics/train_truth.parquet",
    output:
        labels=f"{RESULTS}/supervised/labels.parquet",
    log:
        f"{LOGS}/supervised_labels.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
    shell:
        "{params.launch} supervised-labels --train {input.train} --truth {input.truth} "
        "--out {output.labels} > {log} 2>&1"


# The DG mode: the pretrained CLIP on a held-out target, its BN-necks calibrated on the pooled
# sources' training images (a target's are never read).
rule zeroshot_target:
    input:
        unpack(clip_input),
        train=f"{RESULTS}/ics/train.parquet",
        query=f"{RESULTS}/targets/{{target}}/query.parquet",
        gallery=f"{RESULTS}/targets/{{target}}/gallery.parquet",
    output:
        metrics=f"{RESULTS}/reference/targets/{{target}}/zeroshot.json",
    log:
        f"{LOGS}/zeroshot_{{target}}.log",
    benchmark:
        benchmark_file("zeroshot_{target}")
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
        loader_workers=loader_workers,
    params:
        launch=GPU_LAUNCH,
        cfg=cfg_json(*ZEROSHOT_KEYS),
        clip=clip_arg,
        target_dir=input_folder("query"),
    shell:
        "{params.launch} reference --set {params.cfg} --stage-keys --loader-workers {resources.loader_workers} "
        "{params.clip} --ics-dir {params.target_dir} --train-table {input.train} --out {output.metrics} "
        "> {log} 2>&1"
