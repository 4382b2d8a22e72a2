"""CLIP-FGDI's Protocol 1 config (config/dg-protocol1.yaml) end to end on fixtures in the real
layouts of its eight datasets, with a random-weight ViT-B/16 read from a local file: pooling
four sources with combine_all, the four small targets on their ten protocol splits each, and
the DG table. The schedule is tiny (64x32 input, one iteration per epoch, the fgdi row only),
so the test measures the plumbing, not accuracy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from test_dg_datasets import protocol_roots

from ccafl.config import deep_merge

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

TARGETS = ["prid", "grid", "viper", "ilids"]
TINY = {
    "input": {"height": 64, "width": 32},  # ViT-B/16's grid at 64x32: 4 x 2
    "clip": {"quick_gelu": True},  # a local file cannot tell; OpenAI's ViT-B/16 uses it
    "prompt": {"epochs": 1, "batch_size": 8},
    "fgdi": {"domain_epochs": 1},
    "train": {
        "epochs": 3,
        "intra_epochs": 2,
        "adv_start": 3,
        "warmup_epochs": 1,
        "P": 2,
        "K": 2,
        "iters_per_epoch": 1,
        "num_workers": 0,
        "epochs_per_job": 1,
    },
    "eval": {"batch_size": 16},
    "resources": {"gpus_per_job": 0},
}


@pytest.fixture(scope="module")
def protocol1(tmp_path_factory: pytest.TempPathFactory):
    import open_clip

    work = tmp_path_factory.mktemp("protocol1")
    weights = work / "offline" / "ViT-B-16.pt"
    weights.parent.mkdir()
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None).state_dict(), weights)
    config = yaml.safe_load((REPO / "config" / "dg-protocol1.yaml").read_text())
    own = {
        "dataset": {"root": str(work / "data")},
        "dg": {"domains": protocol_roots(work / "data")},
        "clip": {"pretrained": str(weights)},
    }
    config = deep_merge(deep_merge(config, TINY), own)
    fgdi = config["ablation"]["variants"]["fgdi"]
    config["ablation"] = {"seeds": [0], "variants": {"fgdi": fgdi}, "sweeps": {}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "dg", "--cores", "2",
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml"),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    yield work, work / "results" / "dg-protocol1"
    shutil.rmtree(work)  # about 3 GB of ViT-B/16 weights and checkpoints


def test_protocol1_table_has_every_target_and_the_average(protocol1) -> None:
    _, results = protocol1
    table = json.loads((results / "dg" / "table.json").read_text())
    cells = {(row["model"], row["target"]) for row in table["rows"]}
    for model in ("zero-shot CLIP", "CLIP-FGDI (guiding loss: paper sign)"):
        assert {(model, t) for t in [*TARGETS, "Average"]} <= cells


def test_small_targets_are_scored_on_their_ten_splits(protocol1) -> None:
    _, results = protocol1
    for target in TARGETS:
        metrics = json.loads(
            (
                results / "ablation" / "fgdi-s0" / "eval" / "targets" / target / "metrics.json"
            ).read_text()
        )
        splits = metrics["splits"]
        assert [s["split"] for s in splits] == list(range(10))
        # CLIP-FGDI's test feature: cat[x12, proj] before the BN-necks, squared Euclidean.
        assert (metrics["neck"], metrics["distance"]) == ("before", "euclidean")
        assert metrics["mAP"] == pytest.approx(sum(s["mAP"] for s in splits) / 10)


def test_the_fgdi_row_trains_with_the_id_and_triplet_losses(protocol1) -> None:
    """The protocol's CLIP-FGDI row adds CLIP-ReID's ID loss and triplet to stage 3, and runs
    CLIP-FGDI's prior stage (3 epochs of the two) before the prompts."""
    _, results = protocol1
    prior = pd.read_parquet(results / "ablation" / "fgdi-s0" / "prior" / "log.parquet")
    assert sorted(set(prior["epoch"])) == [1, 2, 3]
    assert prior[["loss_id", "loss_triplet"]].notna().all().all()
    log = pd.read_parquet(results / "ablation" / "fgdi-s0" / "inter" / "epoch_003" / "log.parquet")
    for term in ("loss_id", "loss_triplet", "loss_apn"):
        assert log[term].notna().all(), term


def test_sources_train_on_all_their_images_and_no_target_image(protocol1) -> None:
    work, results = protocol1
    train = pd.read_parquet(results / "ics" / "train.parquet")
    summary = json.loads((results / "ics" / "summary.json").read_text())
    assert sorted(summary["domains"]) == ["cuhk02", "cuhk03", "cuhksysu", "market1501"]
    cuhk02 = summary["domains"]["cuhk02"]["train_images"]
    assert cuhk02 == 5 * 3 * 4  # P1-P5 with P5's test pair too: combine_all
    assert not train["path"].str.startswith(tuple(TARGETS)).any()
    imported = torch.load(results / "clip" / "imported.pt", map_location="cpu", weights_only=False)
    assert imported["clip_model"] == "ViT-B-16" and imported["quick_gelu"] is True
