# CLIP-FGDI's prior stage (DG mode, fgdi.prior_epochs > 0): the image encoder trained with the
# person ID loss and batch-hard triplet on the pooled sources' true ids; stages 1 and 2 of the
# run start from the CLIP it writes (stage_clip_input).


rule prior:
    input:
        unpack(clip_input),
        train=train_table,
        labels=f"{RESULTS}/supervised/labels.parquet",
    output:
        model=f"{RESULTS}/{RUN}prior/clip.pt",
        log=f"{RESULTS}/{RUN}prior/log.parquet",
        metrics=f"{RESULTS}/{RUN}prior/metrics.json",
    log:
        f"{LOGS}/{RUN}prior.log",
    benchmark:
        benchmark_file("prior", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
    params:
        launch=DDP_LAUNCH,
        cfg=run_cfg(*PRIOR_KEYS),
        clip=clip_arg,
        ics_dir=input_folder("train"),
        out_dir=output_folder("model"),
    shell:
        "{params.launch} prior --set {params.cfg} --stage-keys {params.clip} --ics-dir {params.ics_dir} "
        "--labels {input.labels} --out-dir {params.out_dir} > {log} 2>&1"
