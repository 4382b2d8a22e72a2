# Evaluation under the Market-1501 protocol (mAP, mINP, CMC), and the variant tables.


rule evaluate:
    input:
        model=f"{RESULTS}/{RUN}final/model.pt",
        query=f"{RESULTS}/ics/query.parquet",
        gallery=f"{RESULTS}/ics/gallery.parquet",
    output:
        metrics=f"{RESULTS}/{RUN}eval/metrics.json",
        cmc=f"{RESULTS}/{RUN}eval/cmc.parquet",
        features=f"{RESULTS}/{RUN}eval/features.parquet",
    log:
        f"{LOGS}/{RUN}evaluate.log",
    benchmark:
        benchmark_file("evaluate", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
        loader_workers=loader_workers,
    params:
        launch=GPU_LAUNCH,
        cfg=run_cfg(*EVALUATE_KEYS),
        ics_dir=input_folder("query"),
        out_dir=output_folder("metrics"),
        label=run_label,
    shell:
        "{params.launch} evaluate --set {params.cfg} --stage-keys --loader-workers {resources.loader_workers} "
        "--model {input.model} --label {params.label} --ics-dir {params.ics_dir} "
        "--out-dir {params.out_dir} > {log} 2>&1"


# The DG mode: a trained model on each held-out target, and the table of all of them.
rule evaluate_target:
    input:
        model=f"{RESULTS}/{RUN}final/model.pt",
        query=f"{RESULTS}/targets/{{target}}/query.parquet",
        gallery=f"{RESULTS}/targets/{{target}}/gallery.parquet",
    output:
        metrics=f"{RESULTS}/{RUN}eval/targets/{{target}}/metrics.json",
        cmc=f"{RESULTS}/{RUN}eval/targets/{{target}}/cmc.parquet",
        features=f"{RESULTS}/{RUN}eval/targets/{{target}}/features.parquet",
    log:
        f"{LOGS}/{RUN}evaluate_{{target}}.log",
    benchmark:
        benchmark_file("evaluate_{target}", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
        loader_workers=loader_workers,
    params:
        launch=GPU_LAUNCH,
        cfg=run_cfg(*EVALUATE_KEYS),
        target_dir=input_folder("query"),
        out_dir=output_folder("metrics"),
        label=run_label,
    shell:
        "{params.launch} evaluate --set {params.cfg} --stage-keys --loader-workers {resources.loader_workers} "
        "--model {input.model} --label {params.label} --ics-dir {params.target_dir} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule dg_table:
    input:
        [path for _, _, _, path in dg_runs()],
    output:
        table=f"{RESULTS}/dg/table.md",
        csv=f"{RESULTS}/dg/table.csv",
        json=f"{RESULTS}/dg/table.json",
    log:
        f"{LOGS}/dg_table.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        runs=dg_table_args,
    shell:
        "{params.launch} dg-table {params.runs} --out {output.table} --csv {output.csv} "
        "--json {output.json} > {log} 2>&1"


rule dg:
    input:
        rules.dg_table.output.table,


rule ablation:
    input:
        runs=run_metrics("variants"),
        zeroshot=f"{RESULTS}/reference/zeroshot.json",
        untrained=f"{RESULTS}/reference/untrained.json",
    output:
        table=f"{RESULTS}/ablation/table.md",
        csv=f"{RESULTS}/ablation/table.csv",
    log:
        f"{LOGS}/ablation.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json(*VARIANT_TABLE_KEYS),  # each variant's loss switches and backbone
        runs=lambda w, input: run_args("variants", input.runs),
    shell:
        "{params.launch} variant-table --set {params.cfg} --stage-keys --group variants {params.runs} "
        "--reference zeroshot {input.zeroshot} --reference untrained {input.untrained} "
        "--out {output.table} --csv {output.csv} > {log} 2>&1"


rule sweep:
    input:
        runs=run_metrics("sweeps"),
    output:
        table=f"{RESULTS}/ablation/sweep.md",
        csv=f"{RESULTS}/ablation/sweep.csv",
    log:
        f"{LOGS}/sweep.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        runs=lambda w, input: run_args("sweeps", input.runs),
    shell:
        "{params.launch} variant-table --group sweeps {params.runs} "
        "--out {output.table} --csv {output.csv} > {log} 2>&1"


# The unsupervised mode on the demo world, first seed: stage A + CCAFL (`usl`), and stage A +
# CALR's refined clusters in stage 3 (`calr`).
rule usl:
    input:
        lambda w: usl_targets("usl"),


rule calr:
    input:
        lambda w: usl_targets("calr"),


# CALR's components (refinement, camera alignment, entropy weights), each switched off by
# one run, at every seed (issue 19).
rule calr_ablation:
    input:
        runs=lambda w: [p for row in calr_ablation_runs() for p in row[2:]],
        zeroshot=f"{RESULTS}/reference/zeroshot.json",
    output:
        table=f"{RESULTS}/ablation/calr_components.md",
        csv=f"{RESULTS}/ablation/calr_components.csv",
    log:
        f"{LOGS}/calr_ablation.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json("ablation", "clusters", "train"),  # each run's component switches
        runs=calr_ablation_args,
    shell:
        "{params.launch} calr-table --set {params.cfg} --stage-keys {params.runs} "
        "--zeroshot {input.zeroshot} --out {output.table} --csv {output.csv} > {log} 2>&1"


rule calibration:
    input:
        zeroshot=f"{RESULTS}/reference/zeroshot.json",
        untrained=f"{RESULTS}/reference/untrained.json",
        ccafl=lambda w: variant_metrics("order7"),
        supervised=lambda w: variant_metrics("supervised"),
        usl=lambda w: variant_metrics("usl"),
    output:
        table=f"{RESULTS}/ablation/calibration.md",
        json=f"{RESULTS}/ablation/calibration.json",
    log:
        f"{LOGS}/calibration.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        ccafl=lambda w, input: seed_args("--ccafl", input.ccafl),
        supervised=lambda w, input: seed_args("--supervised", input.supervised),
        usl=lambda w, input: seed_args("--usl", input.usl),
    shell:
        "{params.launch} calibration --zeroshot {input.zeroshot} --untrained {input.untrained} "
        "{params.ccafl} {params.supervised} {params.usl} --out {output.table} --json {output.json} "
        "> {log} 2>&1"
