# The CLIP backbone: pretrained on the synthetic benchmark's captions when clip.pretrained is
# "captions" (the embedded default); otherwise an open_clip tag or a local file, nothing to run.


rule clip_pretrain:
    input:
        captions=f"{config['dataset']['root']}/captions.parquet",
    output:
        model=f"{RESULTS}/clip/pretrained.pt",
        log=f"{RESULTS}/clip/log.parquet",
        zero_shot=f"{RESULTS}/clip/zero_shot.json",
    params:
        cfg=cfg_json("dataset", "input", "clip", "clip_pretrain"),
        out_dir=f"{RESULTS}/clip",
    resources:
        gpu=GPUS,
    threads: THREADS
    log:
        f"{LOGS}/clip_pretrain.log",
    benchmark:
        f"{RESULTS}/benchmarks/clip_pretrain.tsv"
    shell:
        "{GPU_CCAFL} clip-pretrain --set {params.cfg} --out-dir {params.out_dir} > {log} 2>&1"
