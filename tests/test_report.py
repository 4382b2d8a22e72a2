"""The report stage on tiny fake artifacts: every declared output is written, even when optional
inputs are missing, and the tables hold the numbers the other stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ccafl.report import OUTPUTS, build_report

CONFIG = {
    "dataset": {"name": "fake", "root": "unused"},
    "clip": {"pretrained": "captions"},
    "train": {"epochs": 4, "intra_epochs": 2, "adv_start": 4},
    "eval": {"rerank": False},
}
METRICS = {
    "mAP": 0.4321,
    "mINP": 0.1234,
    "rank1": 0.5,
    "rank5": 0.75,
    "rank10": 0.875,
    "dataset": "fake",
    "model": "CCAFL",
    "n_query": 6,
    "n_gallery": 18,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _parquet(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)


def _log(epochs: list[int], losses: list[str], steps: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"epoch": e, "step": s, **{name: float(rng.uniform(1, 3)) for name in losses}, "lr": 1e-4}
        for e in epochs
        for s in range(steps)
    ]
    return pd.DataFrame(rows)


def _features(dataset_root: Path) -> pd.DataFrame:
    """6 identities x 2 cameras: one query and three gallery images each, plus a junk image."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(7, 8))
    rows = []
    for pid in range(1, 7):
        for split, camera in [("query", 0), ("gallery", 0), ("gallery", 1), ("gallery", 1)]:
            rows.append((split, pid, camera))
    rows.append(("gallery", -1, 1))
    table = []
    for i, (split, pid, camera) in enumerate(rows):
        path = f"{split}/{pid:04d}_c{camera + 1}_{i:03d}.jpg"
        image = np.full((16, 8, 3), (pid * 40) % 255, dtype=np.uint8)
        (dataset_root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(dataset_root / path)
        feature = centres[max(pid, 0)] + 0.1 * rng.normal(size=8)
        table.append(
            {
                "split": split,
                "path": path,
                "pid": pid,
                "camera": camera,
                "feature": feature.astype(np.float32),
            }
        )
    return pd.DataFrame(table)


def _benchmark(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100.5\n")


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """A complete fake run: results folder and dataset root."""
    results, root = tmp_path / "results", tmp_path / "dataset"
    _json(results / "eval" / "metrics.json", METRICS)
    ranks = np.arange(1, 51)
    _parquet(results / "eval" / "cmc.parquet", pd.DataFrame({"rank": ranks, "cmc": ranks / 50}))
    _parquet(results / "eval" / "features.parquet", _features(root))
    _parquet(results / "clip" / "log.parquet", _log([1, 2], ["loss_infonce"]))
    _parquet(results / "prompt" / "log.parquet", _log([1, 2], ["loss_prompt"]))
    intra = ["loss", "loss_intra1", "loss_intra2", "loss_i2tce", "loss_gid"]
    _parquet(results / "intra" / "log.parquet", _log([1, 2], intra))
    for epoch in (3, 4):
        folder = results / "inter" / f"epoch_{epoch:03d}"
        losses = ["loss", "loss_ipcl", "loss_i2tce", "loss_gid"]
        _parquet(folder / "log.parquet", _log([epoch], losses + ["loss_ical"] * (epoch >= 4)))
        metrics = {"epoch": epoch, "n_gids": 12, "n_clusters": 9 - epoch, "n_edges": epoch}
        metrics |= {
            "assoc_precision": 0.8,
            "assoc_recall": 0.1 * epoch,
            "assoc_f_score": 0.5,
            "assoc_expansion": 1.5,
            "assoc_n_identities": 6,
        }
        _json(folder / "metrics.json", metrics)
        _benchmark(results / "benchmarks" / f"inter_epochs_{epoch:03d}.tsv", 2.0 * epoch)
    _benchmark(results / "benchmarks" / "intra.tsv", 5.0)
    _benchmark(results / "benchmarks" / "report.tsv", 99.0)  # an earlier report run: left out
    zero_shot = {
        "n_test_images": 25,
        "attributes": {
            "hair": {
                "mean_precision_at_10": 0.6,
                "mean_chance": 0.25,
                "classification_accuracy": 0.7,
                "classification_chance": 0.4,
                "values": {},
            }
        },
    }
    _json(results / "clip" / "zero_shot.json", zero_shot)
    return results, root


def _assert_all_written(out: Path) -> None:
    for name in OUTPUTS:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, name


def test_full_run_writes_every_output_with_the_metrics(run, tmp_path: Path) -> None:
    results, root = run
    out = tmp_path / "report"
    summary = build_report(results, root, out, CONFIG)
    _assert_all_written(out)
    assert summary["skipped"] == {}
    assert set(summary["outputs"]) == set(OUTPUTS)

    table = pd.read_csv(out / "metrics.csv")
    for column, key in [("mAP", "mAP"), ("mINP", "mINP"), ("rank-1", "rank1")]:
        assert table[column].iloc[0] == pytest.approx(METRICS[key])
    assert table["rank-5"].iloc[0] == pytest.approx(0.75)
    assert table["rank-10"].iloc[0] == pytest.approx(0.875)
    assert (table["n_query"].iloc[0], table["n_gallery"].iloc[0]) == (6, 18)
    markdown = (out / "metrics.md").read_text()
    for shown in ("43.2", "12.3", "50.0", "75.0", "87.5"):
        assert shown in markdown

    timings = pd.read_csv(out / "timings.csv")
    per_rule = timings[timings["level"] == "rule"].set_index("rule")
    assert per_rule.loc["inter_epochs", "seconds"] == pytest.approx(14.0)  # 6 s + 8 s
    assert per_rule.loc["inter_epochs", "jobs"] == 2
    assert "report" not in per_rule.index
    assert sorted(timings.loc[timings["level"] == "epoch", "epoch"]) == [3, 4]

    zero_shot = pd.read_csv(out / "zero_shot.csv")
    assert zero_shot.loc[0, "attribute"] == "hair"
    assert zero_shot.loc[0, "precision@10"] == pytest.approx(0.6)


def test_missing_optional_inputs_give_placeholders(run, tmp_path: Path) -> None:
    results, root = run
    for epoch in (3, 4):  # epochs == intra_epochs: no stage 3
        for name in ("log.parquet", "metrics.json"):
            (results / "inter" / f"epoch_{epoch:03d}" / name).unlink()
    (results / "clip" / "zero_shot.json").unlink()
    for path in (results / "benchmarks").glob("*.tsv"):
        path.unlink()
    out = tmp_path / "report"
    summary = build_report(results, tmp_path / "no-images", out, CONFIG)
    _assert_all_written(out)
    assert set(summary["skipped"]) == {
        "association.png",
        "retrieval.png",
        "timings.png",
        "timings.csv",
        "zero_shot.csv",
    }
    assert "not available" in pd.read_csv(out / "zero_shot.csv")["note"].iloc[0]
    # What does not depend on the missing inputs is still drawn from the data.
    assert "43.2" in (out / "metrics.md").read_text()


def test_no_training_truth_and_no_caption_clip(run, tmp_path: Path) -> None:
    results, root = run
    for epoch in (3, 4):  # a dataset without train_truth: no assoc_* diagnostics
        path = results / "inter" / f"epoch_{epoch:03d}" / "metrics.json"
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in metrics.items() if "assoc" not in k}))
    config = {**CONFIG, "clip": {"pretrained": "openai"}}
    out = tmp_path / "report"
    summary = build_report(results, root, out, config)
    _assert_all_written(out)
    # The clusters panel is still drawn; a stale zero_shot.json of a caption CLIP is not used.
    assert set(summary["skipped"]) == {"zero_shot.csv"}
    assert "captions" in summary["skipped"]["zero_shot.csv"]


def test_nothing_at_all_still_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "report"
    summary = build_report(tmp_path / "empty", tmp_path / "none", out, None)
    _assert_all_written(out)
    assert set(summary["skipped"]) == set(OUTPUTS)
