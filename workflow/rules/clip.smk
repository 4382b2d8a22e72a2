# The CLIP backbone: pretrained on the synthetic benchmark's captions when clip.pretrained is
# "captions" (the embedded default); an open_clip tag or a local file is read once by
# clip_import, and every stage starts from that copy (stage 3 jobs from their own checkpoints).


localrules:
    clip_import,  # on a cluster: runs on the submit host, which can reach the hub


rule clip_pretrain:
    input:
        captions=f"{captions_root()}/captions.parquet",
    output:
        model=f"{RESULTS}/clip/pretrained.pt",
        log=f"{RESULTS}/clip/log.parquet",
        zero_shot=f"{RESULTS}/clip/zero_shot.json",
        metrics=f"{RESULTS}/clip/metrics.json",
    log:
        f"{LOGS}/clip_pretrain.log",
    benchmark:
        benchmark_file("clip_pretrain")
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
    params:
        launch=GPU_LAUNCH,
        cfg=cfg_json(*CLIP_PRETRAIN_KEYS),
        out_dir=output_folder("model"),
        captions_root=input_folder("captions"),
    shell:
        "{params.launch} clip-pretrain --set {params.cfg} --stage-keys --out-dir {params.out_dir} "
        "--captions-root {params.captions_root} > {log} 2>&1"


rule clip_import:
    input:
        clip_source_file(),
    output:
        model=f"{RESULTS}/clip/imported.pt",
    log:
        f"{LOGS}/clip_import.log",
    benchmark:
        benchmark_file("clip_import")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        cfg=cfg_json(*CLIP_SOURCE_KEYS),
    shell:
        "{params.launch} clip-import --set {params.cfg} --stage-keys --out {output.model} > {log} 2>&1"
