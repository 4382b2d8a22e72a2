# Stage A of the unsupervised mode (train.camera_labels: clusters; CALR's intra-camera stage):
# per-camera clusters stand where the ICS per-camera labels stood, for stages 1-3 of the run.


rule local_clusters:
    input:
        unpack(clip_input),
        train=f"{RESULTS}/ics/train.parquet",
    output:
        clusters=f"{RESULTS}/{RUN}clusters/local_clusters.parquet",
        train=f"{RESULTS}/{RUN}clusters/train.parquet",
        log=f"{RESULTS}/{RUN}clusters/log.parquet",
        metrics=f"{RESULTS}/{RUN}clusters/metrics.json",
    log:
        f"{LOGS}/{RUN}local_clusters.log",
    benchmark:
        benchmark_file("local_clusters", RUN)
    conda:
        CONDA_ENV
    threads: THREADS
    resources:
        gpu=GPUS,
    params:
        launch=GPU_LAUNCH,
        cfg=run_cfg(*LOCAL_CLUSTER_KEYS),
        clip=clip_arg,
        ics_dir=input_folder("train"),
        out_dir=output_folder("clusters"),
    shell:
        "{params.launch} local-clusters --set {params.cfg} --stage-keys {params.clip} "
        "--ics-dir {params.ics_dir} --out-dir {params.out_dir} > {log} 2>&1"


# Diagnostics only: the local clusters against the true ids (never read by training).
rule cluster_quality:
    input:
        clusters=f"{RESULTS}/{RUN}clusters/local_clusters.parquet",
        truth=f"{RESULTS}/ics/train_truth.parquet",
    output:
        quality=f"{RESULTS}/{RUN}clusters/quality.json",
    log:
        f"{LOGS}/{RUN}cluster_quality.log",
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
    shell:
        "{params.launch} cluster-quality --clusters {input.clusters} --truth {input.truth} "
        "--out {output.quality} > {log} 2>&1"


# Diagnostics only: CALR's Fig. 5 from the quality every stage-B epoch wrote into its
# metrics.json (train.labels: refined; the targets ask for it in that mode only).
rule calr_clusters_plot:
    input:
        epochs=stage_b_metrics,
    output:
        plot=report_file("calr_clusters.png", "calr_clusters", "2. Training", RUN),
    log:
        f"{LOGS}/{RUN}calr_clusters_plot.log",
    benchmark:
        benchmark_file("calr_clusters_plot", RUN)
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        epochs=epoch_metrics_args,
    shell:
        "{params.launch} calr-clusters-plot {params.epochs} --out {output.plot} > {log} 2>&1"
