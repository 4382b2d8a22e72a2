# Using a trained model: a searchable index of the main run's evaluation gallery.
# Not part of the default target: `snakemake search_index`, then `python -m ccafl search`.


rule search_index:
    input:
        features=f"{RESULTS}/eval/features.parquet",
        model=f"{RESULTS}/final/model.pt",
        summary=f"{RESULTS}/ics/summary.json",
    output:
        index=f"{RESULTS}/search/gallery/index.faiss",
        rows=f"{RESULTS}/search/gallery/rows.parquet",
        info=f"{RESULTS}/search/gallery/index.json",
    log:
        f"{LOGS}/search_index.log",
    benchmark:
        benchmark_file("search_index")
    conda:
        CONDA_ENV
    params:
        launch=LAUNCH,
        images_root=config["dataset"]["root"],
        out_dir=output_folder("info"),
    shell:
        "{params.launch} index --features {input.features} --split gallery "
        "--camera-names {input.summary} --images-root {params.images_root} "
        "--model {input.model} --out {params.out_dir} > {log} 2>&1"
