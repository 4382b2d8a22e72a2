# Stage 3: one job per inter-camera epoch k = E_intra+1 .. E (paper Eq. 12-20), so every epoch's
# association graph is an artifact and an interrupted run resumes at the last finished epoch.
# A job rebuilds the model from the previous checkpoint alone: no pretrained weights are read.


rule inter_epoch:
    input:
        previous=previous_checkpoint,
        train=f"{RESULTS}/ics/train.parquet",
        text=text_features,
    output:
        checkpoint=f"{RESULTS}/{RUN}inter/epoch_{{epoch}}/checkpoint.pt",
        graph=f"{RESULTS}/{RUN}inter/epoch_{{epoch}}/graph.parquet",
        labels=f"{RESULTS}/{RUN}inter/epoch_{{epoch}}/labels.parquet",
        log=f"{RESULTS}/{RUN}inter/epoch_{{epoch}}/log.parquet",
        metrics=f"{RESULTS}/{RUN}inter/epoch_{{epoch}}/metrics.json",
    params:
        cfg=run_cfg(*TRAINING_SECTIONS),
        ics_dir=f"{RESULTS}/ics",
        prompt_dir=prompt_dir,
        out_dir=lambda w: f"{RESULTS}/{w.run}inter/epoch_{w.epoch}",
        epoch=lambda w: int(w.epoch),
    resources:
        gpu=GPUS,
    log:
        f"{LOGS}/{RUN}inter_epoch_{{epoch}}.log",
    benchmark:
        f"{RESULTS}/{RUN}benchmarks/inter_epoch_{{epoch}}.tsv"
    shell:
        "{DDP_CCAFL} inter-epoch --set {params.cfg} --epoch {params.epoch} "
        "--previous {input.previous} --ics-dir {params.ics_dir} "
        "--prompt-dir {params.prompt_dir} --out-dir {params.out_dir} > {log} 2>&1"


rule final:
    input:
        checkpoint=last_checkpoint,
    output:
        model=f"{RESULTS}/{RUN}final/model.pt",
    log:
        f"{LOGS}/{RUN}final.log",
    benchmark:
        f"{RESULTS}/{RUN}benchmarks/final.tsv"
    shell:
        "{CCAFL} final --checkpoint {input.checkpoint} --out {output.model} > {log} 2>&1"
