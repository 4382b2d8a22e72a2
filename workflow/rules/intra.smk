# Stage 2: intra-camera learning, epochs 1..E_intra in one job (paper Eq. 4-11, 17).


rule intra:
    input:
        unpack(clip_input),
        train=f"{RESULTS}/ics/train.parquet",
        text=f"{RESULTS}/prompt/text_features.parquet",
    output:
        checkpoint=f"{RESULTS}/intra/checkpoint.pt",
        log=f"{RESULTS}/intra/log.parquet",
    params:
        cfg=cfg_json(*TRAINING_SECTIONS),
        clip=clip_arg,
        ics_dir=f"{RESULTS}/ics",
        prompt_dir=f"{RESULTS}/prompt",
        out_dir=f"{RESULTS}/intra",
    resources:
        gpu=GPUS,
    group:
        "training"
    log:
        f"{LOGS}/intra.log",
    benchmark:
        f"{RESULTS}/benchmarks/intra.tsv"
    shell:
        "{CCAFL} intra --set {params.cfg} {params.clip} --ics-dir {params.ics_dir} "
        "--prompt-dir {params.prompt_dir} --out-dir {params.out_dir} > {log} 2>&1"
