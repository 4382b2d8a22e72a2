"""The DG mode's real Snakemake DAG on tiny synthetic domains: three rendered worlds, two
pooled as sources and one held out, zero-shot, the pooled true-id baseline and CLIP-FGDI's
domain parts, each target evaluated on its own and the table with its Average row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pin import strict_snakemake

pytestmark = pytest.mark.e2e

WORLD = {
    "n_cameras": 2,
    "n_train_ids": 8,
    "n_test_ids": 6,
    "n_pretrain_ids": 1,
    "cameras_per_id": [2, 2],
    "frames_per_camera": [2, 3],
    "n_distractors": 2,
    "n_junk": 1,
}
CONFIG = {
    "dataset": {"name": "dg", "format": "pooled", "root": "resources/dg"},
    "synthetic": WORLD,
    "dg": {
        "sources": ["a", "b"],
        "targets": ["t"],
        "domains": {
            "a": {"synthetic": {"seed": 1, "domain_shift": 1.0, "n_pretrain_ids": 24}},
            "b": {"synthetic": {"seed": 2, "domain_shift": 1.0, "n_cameras": 3}},
            "t": {"synthetic": {"seed": 3, "domain_shift": 1.0, "height": 72, "width": 36}},
        },
    },
    "input": {"height": 64, "width": 32},
    "clip": {"model": "ccafl-tiny-rn", "pretrained": "captions"},
    "clip_pretrain": {"epochs": 3, "batch_size": 16},
    "prompt": {"epochs": 2, "batch_size": 16},
    "fgdi": {"domain_epochs": 2},
    "train": {
        "epochs": 3,
        "intra_epochs": 2,
        "adv_start": 3,
        "warmup_epochs": 1,
        "P": 4,
        "K": 2,
        "iters_per_epoch": 2,
        "num_workers": 0,
    },
    "eval": {"batch_size": 64},
    "ablation": {
        "seeds": [0],
        "variants": {
            "supervised": {"train": {"labels": "supervised"}},
            "fgdi": {
                "train": {"labels": "supervised"},
                "fgdi": {"domain_prompts": True, "triplet": 1.0, "prior_epochs": 1},
            },
        },
        "sweeps": {},
    },
}


snakemake = strict_snakemake


def write_config(work: Path, config: dict) -> None:
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def dg_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dg")
    write_config(work, CONFIG)
    snakemake(work)  # the default target of the DG mode is its table
    return work


def test_the_dg_table_has_every_model_on_every_target_and_the_average(dg_work: Path) -> None:
    results = dg_work / "results" / "dg"
    table = pd.read_csv(results / "dg" / "table.csv")
    assert sorted(set(table["model"])) == sorted(
        [
            "zero-shot CLIP",
            "pooled, true ids (CLIP-ReID-style)",
            "CLIP-FGDI (guiding loss: paper sign)",
        ]
    )
    assert set(table["target"]) == {"t", "Average"}
    for model, rows in table.groupby("model"):
        own = rows.set_index("target")
        assert own.loc["Average", "mAP"] == pytest.approx(own.loc["t", "mAP"]), model
    fgdi = json.loads(
        (results / "ablation" / "fgdi-s0" / "eval" / "targets" / "t" / "metrics.json").read_text()
    )
    row = table[(table["model"].str.startswith("CLIP-FGDI")) & (table["target"] == "t")]
    assert row["mAP"].iloc[0] == pytest.approx(100 * fgdi["mAP"])
    assert "CLIP-FGDI" in (results / "dg" / "table.md").read_text()


def test_targets_are_only_evaluated_and_sources_are_pooled(dg_work: Path) -> None:
    results = dg_work / "results" / "dg"
    train = pd.read_parquet(results / "ics" / "train.parquet")
    assert set(train["domain"]) == {0, 1}
    assert not train["path"].str.startswith("t/").any()
    assert sorted(p.name for p in (results / "targets" / "t").iterdir()) == [
        "gallery.parquet",
        "query.parquet",
        "summary.json",
    ]
    prompt_log = pd.read_parquet(results / "ablation" / "fgdi-s0" / "prompt" / "log.parquet")
    assert prompt_log["domain_acc"].notna().any()
    epoch = results / "ablation" / "fgdi-s0" / "inter" / "epoch_003" / "log.parquet"
    assert pd.read_parquet(epoch)[["loss_apn", "loss_triplet"]].notna().all().all()
    baseline = results / "ablation" / "supervised-s0" / "inter" / "epoch_003" / "log.parquet"
    assert not {"loss_apn", "loss_triplet"} & set(pd.read_parquet(baseline).columns)


def test_the_fgdi_row_starts_its_prompts_and_stage_2_from_its_prior(dg_work: Path) -> None:
    results, logs = dg_work / "results" / "dg", dg_work / "logs" / "dg"
    prior = results / "ablation" / "fgdi-s0" / "prior"
    assert pd.read_parquet(prior / "log.parquet")["loss_triplet"].notna().all()
    for stage in ("prompt", "intra"):
        assert (
            "fgdi-s0/prior/clip.pt" in (logs / "ablation" / "fgdi-s0" / f"{stage}.log").read_text()
        )
    assert not (results / "ablation" / "supervised-s0" / "prior").exists()
    assert "prior/clip.pt" not in (logs / "ablation" / "supervised-s0" / "intra.log").read_text()


def test_second_dg_run_does_nothing(dg_work: Path) -> None:
    assert "Nothing to be done" in snakemake(dg_work, "-n").stdout


@pytest.mark.parametrize(
    ("dg", "expected"),
    [
        ({"sources": ["a"]}, "dg.sources: ['a'] names fewer than two datasets"),
        ({"sources": ["a", "b", "t"]}, "dg.targets: t is also in dg.sources"),
    ],
)
def test_bad_dg_lists_are_one_line(tmp_path: Path, dg: dict, expected: str) -> None:
    write_config(tmp_path, {**CONFIG, "dg": {**CONFIG["dg"], **dg}})
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "ccafl:" in line]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
