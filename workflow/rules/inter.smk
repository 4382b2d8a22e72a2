# Stage 3: inter-camera epochs k = E_intra+1 .. E (paper Eq. 12-20), in blocks of
# train.epochs_per_job consecutive epochs per job. Every epoch's checkpoint, association graph,
# labels, log and metrics are outputs of the job that computes it, so every epoch's graph is an
# artifact and an interrupted run resumes at the first unfinished block. One rule per block
# (its outputs are that block's epochs); runs whose blocks differ get rules of their own.
# A job rebuilds the model from the previous checkpoint alone: no pretrained weights are read.


for layout_index, (layout, layout_runs) in enumerate(block_layouts().items()):
    for block in layout:

        rule:
            name:
                block_rule_name(layout_index, block)
            input:
                unpack(supervised_input),
                unpack(domain_text_input),
                previous=lambda w, first=block[0]: epoch_checkpoint(w.run, first - 1),
                train=train_table,
                text=text_features,
            output:
                **block_outputs(block),
            log:
                f"{LOGS}/{RUN}{block_job_name(block)}.log",
            benchmark:
                benchmark_file(block_job_name(block), RUN)
            wildcard_constraints:
                run=run_constraint(layout_runs),
            group:
                stage3_group()
            conda:
                CONDA_ENV
            threads: THREADS
            resources:
                **stage3_resources(block),
            params:
                launch=DDP_LAUNCH,
                cfg=inter_cfg,
                labels=labels_arg,
                domain_text=stage3_domain_text_arg,
                ics_dir=input_folder("train"),
                prompt_dir=prompt_dir,
                epochs=" ".join(str(e) for e in block),
                out_dirs=lambda w, block=block: " ".join(epoch_dir(w.run, e) for e in block),
            shell:
                "{params.launch} inter-epoch --set {params.cfg} --stage-keys {params.labels}{params.domain_text} "
                "--epoch {params.epochs} --previous {input.previous} --ics-dir {params.ics_dir} "
                "--prompt-dir {params.prompt_dir} --out-dir {params.out_dirs} > {log} 2>&1"


rule final:
    input:
        checkpoint=last_checkpoint,
    output:
        model=f"{RESULTS}/{RUN}final/model.pt",
    log:
        f"{LOGS}/{RUN}final.log",
    benchmark:
        benchmark_file("final", RUN)
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
    shell:
        "{params.launch} final --checkpoint {input.checkpoint} --out {output.model} > {log} 2>&1"
