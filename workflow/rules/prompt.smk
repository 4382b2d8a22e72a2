# Stage 1: learned prompt tokens per global ICS id (paper Eq. 1-3).


rule prompt:
    input:
        unpack(stage_clip_input),
        train=train_table,
    output:
        **prompt_outputs(),
    log:
        f"{LOGS}/{RUN}prompt.log",
    benchmark:
        benchmark_file("prompt", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
    params:
        launch=GPU_LAUNCH,
        cfg=run_cfg(*PROMPT_KEYS),
        clip=clip_arg,
        ics_dir=input_folder("train"),
        out_dir=output_folder("tokens"),
        domain_text=domain_text_arg,
    shell:
        "{params.launch} prompt --set {params.cfg} --stage-keys {params.clip} --ics-dir {params.ics_dir} "
        "--out-dir {params.out_dir}{params.domain_text} > {log} 2>&1"
