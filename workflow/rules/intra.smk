# Stage 2: intra-camera learning, epochs 1..E_intra in one job (paper Eq. 4-11, 17).


rule intra:
    input:
        unpack(stage_clip_input),
        train=train_table,
        text=text_features,
    output:
        checkpoint=f"{RESULTS}/{RUN}intra/checkpoint.pt",
        log=f"{RESULTS}/{RUN}intra/log.parquet",
        metrics=f"{RESULTS}/{RUN}intra/metrics.json",
    log:
        f"{LOGS}/{RUN}intra.log",
    benchmark:
        benchmark_file("intra", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
    params:
        launch=DDP_LAUNCH,
        cfg=run_cfg(*INTRA_KEYS),
        clip=clip_arg,
        ics_dir=input_folder("train"),
        prompt_dir=prompt_dir,
        out_dir=output_folder("checkpoint"),
    shell:
        "{params.launch} intra --set {params.cfg} --stage-keys {params.clip} --ics-dir {params.ics_dir} "
        "--prompt-dir {params.prompt_dir} --out-dir {params.out_dir} > {log} 2>&1"
