# Stage 1: learned prompt tokens per global ICS id (paper Eq. 1-3).


rule prompt:
    input:
        unpack(clip_input),
        train=f"{RESULTS}/ics/train.parquet",
    output:
        tokens=f"{RESULTS}/prompt/prompt_tokens.pt",
        text=f"{RESULTS}/prompt/text_features.parquet",
        log=f"{RESULTS}/prompt/log.parquet",
    params:
        cfg=cfg_json("dataset", "input", "clip", "prompt", "train", "eval"),
        clip=clip_arg,
        ics_dir=f"{RESULTS}/ics",
        out_dir=f"{RESULTS}/prompt",
    resources:
        gpu=GPUS,
    group:
        "training"
    log:
        f"{LOGS}/prompt.log",
    benchmark:
        f"{RESULTS}/benchmarks/prompt.tsv"
    shell:
        "{CCAFL} prompt --set {params.cfg} {params.clip} --ics-dir {params.ics_dir} "
        "--out-dir {params.out_dir} > {log} 2>&1"
