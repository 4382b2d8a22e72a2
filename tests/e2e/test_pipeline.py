"""The real Snakemake DAG on the tiny integration config, and Snakemake's cached reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pin import PINNED, REGENERATE, collect, differences

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-6000:]}\n{logs}")
    return result


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
        "the tiny e2e run's metrics moved away from tests/e2e/pinned.json (training on CPU is "
        "deterministic, so any change shows): " + "; ".join(moved) + ". If the change is "
        f"intended, regenerate the pins with `{REGENERATE}` (or `make pin-e2e`) and commit them."
    )


def test_metrics_equal_the_pinned_values(workdir: Path) -> None:
    assert_pinned(workdir / "results" / "tiny")


def test_final_model_loads_in_one_call(workdir: Path) -> None:
    import torch

    from ccafl.models.factory import load_reid_model

    model = load_reid_model(workdir / "results" / "tiny" / "final" / "model.pt")
    f, p = model(torch.zeros(2, 3, 64, 32))
    assert f.shape == (2, model.feat_dim) and p.shape == (2, model.proj_dim)


def test_second_run_does_nothing(workdir: Path) -> None:
    assert planned_jobs(workdir) == {}


def test_forcerun_evaluate_reruns_only_evaluation(workdir: Path) -> None:
    jobs = planned_jobs(workdir, "--forcerun", "evaluate")
    assert "evaluate" in jobs
    assert set(jobs) <= {"evaluate", "report", "all"}


def test_changed_eval_parameter_reruns_only_evaluation(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["eval"]["batch_size"] = 32
    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", str(changed))
    assert "evaluate" in jobs
    assert set(jobs) <= {"evaluate", "report", "all"}


def test_changed_train_parameter_reruns_training_but_not_ics(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["train"]["lr"] = 1e-4
    changed = workdir / "changed_train.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", str(changed))
    assert {"intra", "inter_epoch", "final", "evaluate"} <= set(jobs)
    assert jobs["inter_epoch"] == config["train"]["epochs"] - config["train"]["intra_epochs"]
    assert not {"synthesize", "ics"} & set(jobs), jobs


def test_deleted_epoch_reruns_from_that_epoch(workdir: Path) -> None:
    results = workdir / "results" / "tiny"
    shutil.rmtree(results / "inter" / "epoch_004")
    jobs = planned_jobs(workdir)
    assert jobs.get("inter_epoch") == 2  # epochs 4 and 5, not 3
    assert "intra" not in jobs and "prompt" not in jobs
    snakemake(workdir)
    assert (results / "inter" / "epoch_004" / "checkpoint.pt").is_file()
    assert planned_jobs(workdir) == {}


def test_rerun_from_a_deleted_epoch_reproduces_the_pinned_metrics(workdir: Path) -> None:
    """Epochs 4-5 and the evaluation were recomputed from epoch 3's checkpoint just above."""
    assert_pinned(workdir / "results" / "tiny")


def test_ablation_table(workdir: Path) -> None:
    snakemake(workdir, "ablation")
    table = (workdir / "results" / "tiny" / "ablation" / "table.md").read_text()
    assert "| order1 |" in table and "| order7 | x | x | x | CLIP |" in table
    runs = pd.read_csv(workdir / "results" / "tiny" / "ablation" / "table.csv")
    assert sorted(runs["variant"]) == ["order1", "order7"]
    # Stage 1 does not depend on the loss switches: variants reuse the main run's prompts.
    assert not (workdir / "results" / "tiny" / "ablation" / "order7-s0" / "prompt").exists()


def test_typo_in_config_is_named(workdir: Path) -> None:
    bad = workdir / "typo.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    result = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "'epoch' was unexpected" in result.stdout + result.stderr
