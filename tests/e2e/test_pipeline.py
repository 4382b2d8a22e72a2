"""The real Snakemake DAG on the tiny integration config, and Snakemake's cached reruns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pin import (
    PINNED,
    REGENERATE,
    STRICT,
    collect,
    differences,
    snakemake_command,
    strict_snakemake,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
snakemake = strict_snakemake


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when nothing is to be done)."""
    out = snakemake(workdir, "-n", *args).stdout
    counts: dict[str, int] = {}
    if "Job stats:" not in out:
        return counts
    table = out.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    for line in table:
        rule, count = line.split()
        if rule != "total":
            counts[rule] = int(count)
    return counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    (work / "config").mkdir()
    shutil.copy(REPO / "tests" / "e2e" / "config.yaml", work / "config" / "config.yaml")
    snakemake(work)
    # The first run's pinned figures, to compare the rerun of deleted epochs with exactly.
    (work / "first_run.json").write_text(json.dumps(collect(work / "results" / "tiny")))
    return work


def test_full_dag_produces_the_contract_artifacts(workdir: Path) -> None:
    results = workdir / "results" / "tiny"
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "n_query", "n_gallery"} <= set(metrics)
    assert 0 < metrics["mAP"] <= 1 and metrics["n_query"] > 0
    train = pd.read_parquet(results / "ics" / "train.parquet")
    assert "pid" not in train.columns
    text = pd.read_parquet(results / "prompt" / "text_features.parquet")
    assert len(text) == train["gid"].nunique()
    for epoch in (3, 4, 5):
        folder = results / "inter" / f"epoch_{epoch:03d}"
        graph = pd.read_parquet(folder / "graph.parquet")
        assert list(graph.columns) == ["src_gid", "dst_gid", "src_camera", "dst_camera", "distance"]
        labels = pd.read_parquet(folder / "labels.parquet")
        assert list(labels.columns) == ["gid", "camera", "cluster"]
        log = pd.read_parquet(folder / "log.parquet")
        assert ("loss_ical" in log.columns) == (epoch >= 4)  # Eq. 20: ICAL from E_adv = 4
        epoch_metrics = json.loads((folder / "metrics.json").read_text())
        assert 0 <= epoch_metrics["assoc_precision"] <= 1
    zero_shot = json.loads((results / "clip" / "zero_shot.json").read_text())
    assert zero_shot["attributes"]
    from ccafl.report import OUTPUTS

    for name in OUTPUTS:  # the report rule is part of the default target
        assert (results / "report" / name).stat().st_size > 0, name
    assert f"{100 * metrics['mAP']:.1f}" in (results / "report" / "metrics.md").read_text()


def assert_pinned(results: Path) -> None:
    moved = differences(collect(results), json.loads(PINNED.read_text()))
    assert not moved, (
        "the tiny e2e run's metrics moved away from tests/e2e/pinned.json by more than "
        "another CPU's rounding explains (tolerances in tests/e2e/pin.py): "
        + "; ".join(moved)
        + f". If the change is intended, regenerate the pins with `{REGENERATE}` (or "
        "`make pin-e2e`) and commit them."
    )


def test_metrics_equal_the_pinned_values(workdir: Path) -> None:
    assert_pinned(workdir / "results" / "tiny")


def test_final_model_loads_in_one_call(workdir: Path) -> None:
    import torch

    from ccafl.inference.models import load_reid_model

    model = load_reid_model(workdir / "results" / "tiny" / "final" / "model.pt")
    f, p = model(torch.zeros(2, 3, 64, 32))
    assert f.shape == (2, model.feat_dim) and p.shape == (2, model.proj_dim)


def test_every_file_a_job_writes_is_a_declared_output(workdir: Path) -> None:
    """Snakemake reruns, cleans and reports only declared outputs: an undeclared file a stage
    writes would outlive the rerun that should replace it."""
    summary = snakemake(workdir, "--summary").stdout.splitlines()
    declared = {line.split("\t")[0] for line in summary[1:] if line.strip()}
    written = {
        p.relative_to(workdir).as_posix()
        for p in (workdir / "results").rglob("*")
        if p.is_file() and "benchmarks" not in p.parts  # a job's `benchmark:` file
    }
    assert written - declared == set()


def test_second_run_does_nothing(workdir: Path) -> None:
    assert planned_jobs(workdir) == {}


def test_forcerun_evaluate_reruns_only_evaluation(workdir: Path) -> None:
    jobs = planned_jobs(workdir, "--forcerun", "evaluate")
    assert "evaluate" in jobs
    assert set(jobs) <= {"evaluate", "report", "all"}


# Which jobs a one-key change plans (issue 12): every rule's params name exactly the config
# keys its stage reads. The tiny run: epochs 1-2 intra, 3-5 inter, one stage-3 job per epoch.
TRAINING = {"intra", "inter_epochs_003", "inter_epochs_004", "inter_epochs_005"}
TRAINING |= {"final", "evaluate", "report", "all"}
STAGE3 = TRAINING - {"intra"}
EVALUATION = {"evaluate", "zeroshot", "report", "all"}
EVERYTHING = {"synthesize", "ics", "clip_pretrain", "prompt", "zeroshot"} | TRAINING
RERUNS = [
    ("train.lam", 0.6, TRAINING),  # stage 2 onwards; not ics, prompt, clip_pretrain, zeroshot
    ("train.threshold", 1.3, STAGE3),  # read by stage 3 only
    ("train.camera_centering", False, STAGE3),
    ("train.association_search", "exact", STAGE3),
    # The unsupervised mode's stage A: not part of an ICS run, so changing it reruns nothing;
    # switching the main run to the mode adds stage A and retrains on its clusters.
    ("clusters.epochs", 3, set()),
    ("train.camera_labels", "clusters", {"local_clusters", "cluster_quality", "prompt"} | TRAINING),
    ("train.adv_start", 5, STAGE3),
    # Blocks of 2, jobs 3-4 and 5: the same numbers (test_blocks_...), but new jobs; not intra.
    ("train.epochs_per_job", 2, STAGE3 - {"inter_epochs_004"}),
    # Training's loader; the evaluations' loaders take it as a resource (no number changes).
    ("train.num_workers", 1, TRAINING),
    ("resources.threads_per_job", 1, set()),  # how jobs run, not what they compute
    ("eval.batch_size", 32, EVALUATION),
    ("eval.rerank", True, EVALUATION),
    ("prompt.lr", 1.0e-3, {"prompt"} | TRAINING),
    ("clip_pretrain.lr", 1.0e-3, {"clip_pretrain", "prompt", "zeroshot"} | TRAINING),
    ("dataset.verify_images", "full", EVERYTHING - {"synthesize", "clip_pretrain"}),
    ("synthetic.seed", 4, EVERYTHING),
]


def changed_config(workdir: Path, key: str, value: object) -> Path:
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    *sections, name = key.split(".")
    node = config
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value
    path = workdir / f"changed-{key}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(("key", "value", "expected"), RERUNS, ids=[r[0] for r in RERUNS])
def test_a_changed_key_reruns_exactly_the_stages_that_read_it(
    workdir: Path, key: str, value: object, expected: set[str]
) -> None:
    jobs = planned_jobs(workdir, "--configfile", str(changed_config(workdir, key, value)))
    assert set(jobs) == expected


def test_changed_train_parameter_reruns_training_but_not_ics(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["train"]["lr"] = 1e-4
    changed = workdir / "changed_train.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", str(changed))
    assert {"intra", "final", "evaluate"} <= set(jobs), jobs
    # Blocks of one epoch here: one stage-3 job per epoch after E_intra.
    first, last = config["train"]["intra_epochs"] + 1, config["train"]["epochs"]
    stage3 = {rule for rule in jobs if rule.startswith("inter_epochs")}
    assert stage3 == {f"inter_epochs_{e:03d}" for e in range(first, last + 1)}, jobs
    assert not {"synthesize", "ics", "clip_pretrain", "prompt"} & set(jobs), (
        f"a train.* key change reran a stage that does not read it: {jobs}"
    )


def test_deleted_epoch_reruns_from_that_epoch(workdir: Path) -> None:
    results = workdir / "results" / "tiny"
    shutil.rmtree(results / "inter" / "epoch_004")
    jobs = planned_jobs(workdir)
    # Blocks of one epoch here: the jobs of epochs 4 and 5, not 3.
    assert {rule for rule in jobs if rule.startswith("inter_epochs")} == {
        "inter_epochs_004",
        "inter_epochs_005",
    }
    assert "intra" not in jobs and "prompt" not in jobs
    snakemake(workdir)
    assert (results / "inter" / "epoch_004" / "checkpoint.pt").is_file()
    assert planned_jobs(workdir) == {}


def test_rerun_from_a_deleted_epoch_reproduces_the_pinned_metrics(workdir: Path) -> None:
    """Epochs 4-5 and the evaluation were recomputed from epoch 3's checkpoint just above: on
    one machine they reproduce the first run exactly, and so stay within the pins."""
    rerun = collect(workdir / "results" / "tiny")
    first = json.loads((workdir / "first_run.json").read_text())
    moved = differences(rerun, first, {})
    assert not moved, (
        "epochs 4-5 recomputed from epoch 3's checkpoint differ from the first run on the same "
        "machine (resume or training is not deterministic): " + "; ".join(moved)
    )
    assert_pinned(workdir / "results" / "tiny")


def test_ablation_table(workdir: Path) -> None:
    snakemake(workdir, "ablation")
    table = (workdir / "results" / "tiny" / "ablation" / "table.md").read_text()
    assert "| order1 |" in table and "| order7 | x | x | x | CLIP |" in table
    runs = pd.read_csv(workdir / "results" / "tiny" / "ablation" / "table.csv")
    assert sorted(runs["variant"]) == ["calr", "order1", "order7", "usl"]
    # Stage 1 does not depend on the loss switches: variants reuse the main run's prompts.
    assert not (workdir / "results" / "tiny" / "ablation" / "order7-s0" / "prompt").exists()
    # The unsupervised run learns its own prompts, for its own (cluster) ids.
    assert (workdir / "results" / "tiny" / "ablation" / "usl-s0" / "prompt").is_dir()


def test_unsupervised_target_runs_stage_a_and_ccafl_on_its_clusters(workdir: Path) -> None:
    snakemake(workdir, "usl")
    run = workdir / "results" / "tiny" / "ablation" / "usl-s0"
    local = pd.read_parquet(run / "clusters" / "local_clusters.parquet")
    assert list(local.columns) == ["path", "camera", "local_cluster"]
    ics = pd.read_parquet(workdir / "results" / "tiny" / "ics" / "train.parquet")
    assert local["path"].tolist() == ics["path"].tolist()  # every training image, in order
    per_camera = local.groupby("camera")
    # CALR's rule: N_c // 5 clusters per camera, labelled 0..n-1 within each camera.
    assert (per_camera["local_cluster"].nunique() == per_camera.size() // 5).all()
    assert (per_camera["local_cluster"].max() + 1 == per_camera["local_cluster"].nunique()).all()
    train = pd.read_parquet(run / "clusters" / "train.parquet")
    assert (train["intra_id"] == local["local_cluster"]).all()
    gids = train.groupby("gid")["camera"].nunique()
    assert (gids == 1).all() and train["gid"].max() + 1 == train["gid"].nunique()
    quality = json.loads((run / "clusters" / "quality.json").read_text())
    assert 0 < quality["bcubed_f_score"] <= 1 and quality["n_images"] == len(local)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["mAP"] > 0
    epoch = json.loads((run / "inter" / "epoch_005" / "metrics.json").read_text())
    assert "assoc_f_score" in epoch  # diagnostics found the truth table outside --ics-dir


def test_calr_target_trains_stage_3_on_refined_clusters(workdir: Path) -> None:
    snakemake(workdir, "calr")
    epoch_dir = workdir / "results" / "tiny" / "ablation" / "calr-s0" / "inter" / "epoch_005"
    labels = pd.read_parquet(epoch_dir / "labels.parquet")
    assert list(labels.columns) == [
        "path", "gid", "camera", "cluster", "global_cluster", "local_cluster"
    ]  # fmt: skip
    refined, glob = labels["cluster"], labels["global_cluster"]
    assert ((refined >= 0) <= (glob >= 0)).all()  # refinement only removes
    metrics = json.loads((epoch_dir / "metrics.json").read_text())
    assert metrics["n_trained_images"] == int((refined >= 0).sum())
    for name in ("global", "refined", "local"):
        assert 0 <= metrics[f"clusters_{name}_bcubed_f_score"] <= 1
    assert "loss_ical" not in metrics and "loss_i2tce" not in metrics
    # CALR's Fig. 5 is part of the target: the drawn plot, not the no-truth placeholder.
    plot = epoch_dir.parents[1] / "report" / "calr_clusters.png"
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[1] > 300


def test_calr_ablation_table_from_the_calr_run(workdir: Path) -> None:
    """The tiny config names only calr: its table has the zero-shot row and calr's, every
    component on, read from the run just trained (nothing is retrained)."""
    snakemake(workdir, "calr_ablation")
    table = (workdir / "results" / "tiny" / "ablation" / "calr_components.md").read_text()
    assert "| zero-shot CLIP (" in table and "| calr | x | x |" in table
    runs = pd.read_csv(workdir / "results" / "tiny" / "ablation" / "calr_components.csv")
    metrics = json.loads(
        (
            workdir / "results" / "tiny" / "ablation" / "calr-s0" / "eval" / "metrics.json"
        ).read_text()
    )
    assert runs["variant"].tolist() == ["calr"] and runs["mAP"][0] == 100 * metrics["mAP"]
    assert 0 <= runs["refined_bcubed_f"][0] <= 1


def test_typo_in_config_is_named(workdir: Path) -> None:
    bad = workdir / "typo.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    result = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "config key train.epoch is unknown (did you mean 'epochs'?)" in result.stderr


def _block_workdir(tmp_path_factory: pytest.TempPathFactory, name: str, per_job: int) -> Path:
    work = tmp_path_factory.mktemp(name)
    (work / "config").mkdir()
    config = yaml.safe_load((REPO / "tests" / "e2e" / "config.yaml").read_text())
    config["train"]["epochs_per_job"] = per_job
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical metrics, and every epoch's checkpoint weights and association graph."""
    import torch

    ra, rb = a / "results" / "tiny", b / "results" / "tiny"
    assert json.loads((ra / "eval" / "metrics.json").read_text()) == json.loads(
        (rb / "eval" / "metrics.json").read_text()
    )
    for epoch in (3, 4, 5):
        folder = f"inter/epoch_{epoch:03d}"
        pd.testing.assert_frame_equal(
            pd.read_parquet(ra / folder / "graph.parquet"),
            pd.read_parquet(rb / folder / "graph.parquet"),
        )
        wa = torch.load(ra / folder / "checkpoint.pt", weights_only=False)["model"]
        wb = torch.load(rb / folder / "checkpoint.pt", weights_only=False)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), folder


def test_blocks_of_epochs_equal_one_job_per_epoch(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """train.epochs_per_job only groups epochs into jobs: the numbers do not change."""
    blocks = _block_workdir(tmp_path_factory, "e2e-blocks", per_job=3)
    snakemake(blocks)
    assert (blocks / "results" / "tiny" / "benchmarks" / "inter_epochs_003.tsv").is_file()
    assert not (blocks / "results" / "tiny" / "benchmarks" / "inter_epochs_004.tsv").exists()
    _same_run(workdir, blocks)


def test_run_killed_inside_a_block_resumes_from_the_block_start(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Killed after epoch 3 of the block 3-5: the rerun redoes the block, same numbers."""
    import signal
    import time

    killed = _block_workdir(tmp_path_factory, "e2e-killed", per_job=3)
    process = subprocess.Popen(
        snakemake_command(killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=STRICT,
    )
    first_epoch = killed / "results" / "tiny" / "inter" / "epoch_003" / "metrics.json"
    deadline = time.monotonic() + 600
    while not first_epoch.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed inside the block"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "results" / "tiny" / "eval" / "metrics.json").exists()
    snakemake(killed, "--unlock")
    snakemake(killed, "--rerun-incomplete")
    _same_run(workdir, killed)


# --------------------------------------------------------------------------- using the model
# Issue 13: searching the test split through the CLI reproduces the evaluation's CMC.


def ccafl_cli(workdir: Path, *args: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ccafl", *map(str, args)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def cli_metrics(ranking: pd.DataFrame, results: Path, dataset: Path) -> dict:
    """CMC (ranks 1..50) and mAP from a search ranking, over the queries that have a valid
    match as the evaluation counts them (a gallery image of the same person in another
    camera); the ranking must list every allowed gallery image for mAP to be complete."""
    query = pd.read_parquet(results / "ics" / "query.parquet")
    gallery = pd.read_parquet(results / "ics" / "gallery.parquet")
    firsts, aps = [], []
    for path, pid, camera in zip(query["path"], query["pid"], query["camera"], strict=True):
        if not ((gallery["pid"] == pid) & (gallery["camera"] != camera)).any():
            continue
        rows = ranking[ranking["query"] == str((dataset / path).resolve())]
        match_ranks = np.sort(rows.loc[rows["match"], "rank"].to_numpy())
        firsts.append(match_ranks[0] if len(match_ranks) else np.inf)
        aps.append(
            np.mean(np.arange(1, len(match_ranks) + 1) / match_ranks) if len(match_ranks) else 0.0
        )
    firsts = np.asarray(firsts)
    cmc = np.array([(firsts <= k).mean() for k in range(1, 51)])
    return {"cmc": cmc, "mAP": float(np.mean(aps)), "rank10": float(cmc[9])}


def test_search_reproduces_the_evaluation_rank10(workdir: Path) -> None:
    results = workdir / "results" / "tiny"
    assert "search_index" not in planned_jobs(workdir)  # not part of the default target
    snakemake(workdir, "search_index")
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    gallery = pd.read_parquet(results / "ics" / "gallery.parquet")
    dataset = workdir / "resources" / "tiny"
    query_dir = dataset / "query"
    info = json.loads((results / "search" / "gallery" / "index.json").read_text())
    assert info["kind"] == "flat" and info["n_rows"] == len(gallery)

    # 1. The search_index rule's index (the evaluation's own gallery features): top 10 gives
    # the rank-10 rate; the whole gallery ranked gives every CMC rank and the mAP as well.
    out = workdir / "search_eval"
    ccafl_cli(
        workdir, "search", "--index", results / "search" / "gallery", "--query", query_dir,
        "--top-k", "10", "--protocol", "market1501", "--out", out,
    )  # fmt: skip
    ranking = pd.read_csv(out / "ranking.csv")
    assert ranking["query"].nunique() == metrics["n_query"]
    assert 0 < metrics["rank10"] < 1  # a rate that is neither trivially 0 nor 1
    assert cli_metrics(ranking, results, dataset)["rank10"] == pytest.approx(metrics["rank10"])
    out = workdir / "search_eval_all"
    ccafl_cli(
        workdir, "search", "--index", results / "search" / "gallery", "--query", query_dir,
        "--top-k", str(len(gallery)), "--protocol", "market1501", "--no-sheet", "--out", out,
    )  # fmt: skip
    full = cli_metrics(pd.read_csv(out / "ranking.csv"), results, dataset)
    cmc = pd.read_parquet(results / "eval" / "cmc.parquet")["cmc"].to_numpy()
    np.testing.assert_allclose(full["cmc"], cmc, atol=1e-12)
    assert full["mAP"] == pytest.approx(metrics["mAP"], abs=1e-6)

    # 2. The user's path: embed the gallery folder, index it, search: the same rates, and the
    # same vectors as the evaluation wrote.
    model = results / "final" / "model.pt"
    features = workdir / "gallery_features.parquet"
    ccafl_cli(
        workdir, "embed", "--model", model, "--images", "resources/tiny/bounding_box_test",
        "--out", features,
    )  # fmt: skip
    from ccafl.embedding import read_embeddings

    embedded = read_embeddings(features)
    evaluated = pd.read_parquet(results / "eval" / "features.parquet")
    evaluated = evaluated[evaluated["split"] == "gallery"]
    by_name = {
        Path(p).name: np.asarray(f)
        for p, f in zip(evaluated["path"], evaluated["feature"], strict=True)
    }
    reference = np.stack([by_name[Path(p).name] for p in embedded.rows["path"]])
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(embedded.features, reference, atol=1e-5)
    ccafl_cli(workdir, "index", "--features", features, "--out", workdir / "user_index")
    out = workdir / "search_user"
    ccafl_cli(
        workdir, "search", "--index", workdir / "user_index", "--query", query_dir,
        "--top-k", "10", "--protocol", "market1501", "--out", out,
    )  # fmt: skip
    user = cli_metrics(pd.read_csv(out / "ranking.csv"), results, dataset)
    assert user["rank10"] == pytest.approx(metrics["rank10"])
    assert (out / "contact_sheet.png").is_file() and (out / "contact_sheet.html").is_file()
