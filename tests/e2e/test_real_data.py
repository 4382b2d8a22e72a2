"""The real-data DAG (ics .. evaluate) on a Market-1501 fixture with an RN50 CLIP read from a
local OpenAI-layout checkpoint, as a user without internet runs it.

The checkpoint is open_clip's RN50 with random weights, saved with ``torch.save`` of its state
dict (the key layout of OpenAI's release). The schedule is tiny (one prompt epoch, one
iteration per training epoch, 64x32 input), so the test measures the plumbing, not accuracy:
the weights are read once, by clip_import, with the activation OpenAI's RN50 was trained with;
after stage 1 the user's file is deleted and stages 2-3, final and evaluate still run; without
even the imported copy, stage 3, final and evaluate still run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from conftest import write_image

from ccafl.models.backbone import RETRIEVAL_FEATURES

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

# person -> cameras it was seen in (two frames each); 6 people, 3 cameras, 12 ICS ids.
TRAIN = {1: [1, 2], 2: [1, 3], 3: [2, 3], 4: [1, 2], 5: [2, 3], 6: [1, 3]}
QUERY = [(20, 1), (21, 2), (22, 3)]
GALLERY = [(20, 2), (20, 3), (21, 1), (21, 3), (22, 1), (22, 2), (0, 1), (-1, 2)]


def market_name(pid: int, cam: int, frame: int) -> str:
    return (
        f"{pid:04d}_c{cam}s1_{frame:06d}_00.jpg" if pid >= 0 else f"-1_c{cam}s1_{frame:06d}_00.jpg"
    )


def build_market(root: Path) -> Path:
    frame = 0
    for pid, cams in TRAIN.items():
        for cam in cams:
            for _ in range(2):
                frame += 1
                write_image(root / "bounding_box_train" / market_name(pid, cam, frame), frame)
    for folder, items in (("query", QUERY), ("bounding_box_test", GALLERY)):
        for pid, cam in items:
            frame += 1
            write_image(root / folder / market_name(pid, cam, frame), frame)
    return root


CONFIG = {
    "dataset": {"name": "real", "format": "market1501"},
    "input": {"height": 64, "width": 32},  # RN50's grid at 64x32: 2 x 1
    "clip": {"model": "RN50"},
    "prompt": {"epochs": 1, "batch_size": 8},
    "train": {
        "epochs": 3,
        "intra_epochs": 2,
        "adv_start": 3,
        "warmup_epochs": 1,
        "P": 2,
        "K": 2,
        "iters_per_epoch": 1,
        "num_workers": 0,
    },
    "eval": {"batch_size": 16},
    "resources": {"gpus_per_job": 0},
    "ablation": {"seeds": [0], "variants": {}, "sweeps": {}},
}


CORES = 2  # Snakemake's --cores; each CPU job runs with all of them (THREADS in common.smk)


def run(work: Path, *args: str) -> subprocess.CompletedProcess:
    # The thread count Snakemake gives a job, so that reruns by hand compute the same sums in
    # the same order (at one thread instead, stage 3's mAP on this fixture moves by 0.014).
    threads = str(CORES)
    env = {**os.environ, **dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), threads)}
    result = subprocess.run(
        [sys.executable, *args], cwd=work, capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log"))
        )
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-5000:]}\n{logs}")
    return result


def snakemake(work: Path, *targets: str) -> None:
    snakefile = str(REPO / "workflow" / "Snakefile")
    run(work, "-m", "snakemake", "--snakefile", snakefile, "--cores", str(CORES), *targets)


def market_work_dir(work: Path) -> Path:
    """The Market fixture, a random-weight RN50 saved as OpenAI's checkpoint and CONFIG reading
    both as ``work/config/config.yaml``; returns the weights file."""
    import open_clip

    weights = work / "offline" / "RN50-openai.pt"
    weights.parent.mkdir()
    torch.manual_seed(0)
    torch.save(open_clip.create_model("RN50", pretrained=None).state_dict(), weights)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "root": str(build_market(work / "m"))}}
    config["clip"] = {**CONFIG["clip"], "pretrained": str(weights)}
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return weights


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    start = time.perf_counter()
    work = tmp_path_factory.mktemp("real")
    weights = market_work_dir(work)
    results = work / "results" / "real"
    snakemake(work, "results/real/prompt/text_features.parquet")  # ics, clip_import, stage 1
    weights.unlink()  # the user's file is not needed any more
    snakemake(work, "results/real/eval/metrics.json")  # stages 2 and 3, final, evaluate
    yield {"work": work, "results": results, "seconds": time.perf_counter() - start}
    shutil.rmtree(work)  # about 2 GB of RN50 weights and checkpoints


def test_real_data_dag_runs_after_the_weights_are_gone(real_run: dict) -> None:
    results = real_run["results"]
    summary = json.loads((results / "ics" / "summary.json").read_text())
    assert summary["n_gids"] == 12 and summary["train"]["ids_per_camera"] == [4, 4, 4]
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    assert metrics["n_query"] == 3 and metrics["n_gallery"] == len(GALLERY)
    assert 0 <= metrics["mAP"] <= 1
    assert (results / "inter" / "epoch_003" / "checkpoint.pt").is_file()
    print(f"\nreal-data DAG, RN50 at 64x32 on CPU: {real_run['seconds']:.1f} s")


def test_weights_were_read_once_with_quickgelu(real_run: dict) -> None:
    work, results = real_run["work"], real_run["results"]
    imported = torch.load(results / "clip" / "imported.pt", map_location="cpu", weights_only=False)
    assert imported["quick_gelu"] is True and imported["clip_model"] == "RN50"
    import_log = (work / "logs" / "real" / "clip_import.log").read_text()
    assert "QuickGELU" in import_log and "RN50-openai.pt" in import_log
    prompt_log = (work / "logs" / "real" / "prompt.log").read_text()
    assert "imported.pt: QuickGELU" in prompt_log
    for log in (work / "logs" / "real").glob("inter_epoch_*.log"):
        assert "RN50-openai.pt" not in log.read_text() and "imported.pt" not in log.read_text()


def test_stage3_final_and_evaluate_need_no_pretrained_weights(real_run: dict) -> None:
    """With neither the user's file nor the imported copy, the later stages still run."""
    work, results = real_run["work"], real_run["results"]
    shutil.move(results / "clip" / "imported.pt", work / "imported.pt.away")
    try:
        config = json.dumps(yaml.safe_load((work / "config" / "config.yaml").read_text()))
        out = work / "again"
        run(
            work, "-m", "ccafl", "inter-epoch", "--set", config, "--epoch", "3",
            "--previous", str(results / "intra" / "checkpoint.pt"),
            "--ics-dir", str(results / "ics"), "--prompt-dir", str(results / "prompt"),
            "--out-dir", str(out / "inter"),
        )  # fmt: skip
        run(
            work, "-m", "ccafl", "final", "--set", config,
            "--checkpoint", str(out / "inter" / "checkpoint.pt"), "--out", str(out / "model.pt"),
        )  # fmt: skip
        run(
            work, "-m", "ccafl", "evaluate", "--set", config, "--model", str(out / "model.pt"),
            "--ics-dir", str(results / "ics"), "--out-dir", str(out / "eval"),
        )  # fmt: skip
    finally:
        shutil.move(work / "imported.pt.away", results / "clip" / "imported.pt")
    # Recomputed from the same checkpoint in a fresh process: the same epoch, the same result.
    first = json.loads((results / "eval" / "metrics.json").read_text())
    again = json.loads((out / "eval" / "metrics.json").read_text())
    assert again["mAP"] == first["mAP"] and again["rank1"] == first["rank1"]
    graph = pd.read_parquet(out / "inter" / "graph.parquet")
    pd.testing.assert_frame_equal(
        graph, pd.read_parquet(results / "inter" / "epoch_003" / "graph.parquet")
    )


@pytest.mark.parametrize("backbone", ["resnet50-imagenet", "RN50"])
def test_calr_overlay_runs_the_unsupervised_dag_on_the_market_fixture(
    tmp_path: Path, backbone: str
) -> None:
    """config/calr.yaml over the Market fixture: stage A, stages 2-3 on its clusters with
    CALR's refined stage B, final and evaluate, on a tiny schedule; with the overlay's own
    backbone (CALR's ImageNet ResNet-50, here a random torchvision file: no stage 1) and with
    the CLIP option (the dataset file's RN50, a local file: stage 1 runs)."""
    rn50 = market_work_dir(tmp_path)
    if backbone == "RN50":
        clip = {"model": "RN50", "pretrained": str(rn50), "last_stride_one": False}
    else:
        clip = {"model": backbone, "pretrained": str(tmp_path / "offline" / "resnet50.pth")}
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), clip["pretrained"])
    tiny = {  # the overlay's schedule, shrunk to the fixture (8 images per camera)
        "clip": clip,
        "train": {k: CONFIG["train"][k] for k in ("epochs", "intra_epochs", "P", "K")}
        | {"iters_per_epoch": 1, "epochs_per_job": 1},
        "clusters": {"epochs": 1, "images_per_cluster": 2, "k1": 3, "k2": 1, "k": 4,
                     "min_size": 2, "weights_after": 0, "alignment_epochs": 1},
    }  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    snakefile = str(REPO / "workflow" / "Snakefile")
    targets = ["results/real/eval/metrics.json", "results/real/reference/zeroshot.json"]
    run(
        tmp_path, "-m", "snakemake", *targets, "--snakefile", snakefile,
        "--cores", str(CORES), "--configfile", str(REPO / "config" / "calr.yaml"),
        str(tmp_path / "tiny.yaml"),
    )  # fmt: skip
    results = tmp_path / "results" / "real"
    assert (results / "prompt").is_dir() == (backbone == "RN50")
    zeroshot = json.loads((results / "reference" / "zeroshot.json").read_text())
    features = {"pooled"} if backbone == "resnet50-imagenet" else set(RETRIEVAL_FEATURES)
    assert features <= zeroshot.keys() and zeroshot["best"]["feature"] in features
    if backbone == "resnet50-imagenet":
        assert "projection" not in zeroshot
        model = torch.load(results / "final" / "model.pt", map_location="cpu", weights_only=False)
        assert model["model"]["visual.trunk.conv1.weight"].shape == (64, 3, 7, 7)
    local = pd.read_parquet(results / "clusters" / "local_clusters.parquet")
    assert list(local.columns) == ["path", "camera", "local_cluster"] and len(local) == 24
    assert local.groupby("camera")["local_cluster"].nunique().tolist() == [4, 4, 4]
    labels = pd.read_parquet(results / "inter" / "epoch_003" / "labels.parquet")
    assert {"cluster", "global_cluster", "local_cluster"} <= set(labels.columns)
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    assert metrics["n_query"] == 3 and 0 <= metrics["mAP"] <= 1
