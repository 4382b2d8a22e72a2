"""The report stage on tiny fake artifacts: every declared output is written, even when optional
inputs are missing, the tables hold the numbers the other stages wrote, and only the files the
report rule names are read."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ccafl.report import (
    OUTPUTS,
    PAGE,
    ReportInputs,
    association_table,
    benchmark_table,
    build_report,
    ical_start,
    write_metrics,
)

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


def _reference(offset: float) -> dict:
    """A reference JSON as ccafl.reference writes it: per feature, raw and calibrated."""
    result: dict = {"source": "captions"}
    for i, feature in enumerate(("pooled", "projection", "concat")):
        result[feature] = {
            way: {**METRICS, "model": feature, "mAP": offset + 0.01 * i + 0.001 * j}
            for j, way in enumerate(("raw", "calibrated"))
        }
    result["best"] = {"feature": "concat", "way": "calibrated", **result["concat"]["calibrated"]}
    return result


@pytest.fixture
def run(tmp_path: Path) -> ReportInputs:
    """A complete fake run: every file the report rule names, and a dataset root."""
    results, root = tmp_path / "results", tmp_path / "dataset"
    _json(results / "eval" / "metrics.json", METRICS)
    ranks = np.arange(1, 51)
    _parquet(results / "eval" / "cmc.parquet", pd.DataFrame({"rank": ranks, "cmc": ranks / 50}))
    _parquet(results / "eval" / "features.parquet", _features(root))
    _parquet(results / "clip" / "log.parquet", _log([1, 2], ["loss_infonce"]))
    _parquet(results / "prompt" / "log.parquet", _log([1, 2], ["loss_prompt"]))
    intra = ["loss", "loss_intra1", "loss_intra2", "loss_i2tce", "loss_gid"]
    _parquet(results / "intra" / "log.parquet", _log([1, 2], intra))
    epochs = {}
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
        epochs[epoch] = (folder / "log.parquet", folder / "metrics.json")
        _benchmark(results / "benchmarks" / f"inter_epochs_{epoch:03d}.tsv", 2.0 * epoch)
    _benchmark(results / "benchmarks" / "intra.tsv", 5.0)
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
    _json(results / "reference" / "zeroshot.json", _reference(0.2))
    # Files of an earlier, longer run and the report's own benchmark: not named, never read.
    stale = results / "inter" / "epoch_009"
    _parquet(stale / "log.parquet", _log([9], ["loss", "loss_ipcl"]))
    _json(stale / "metrics.json", {"epoch": 9, "n_gids": 12, "n_clusters": 1, "n_edges": 0})
    _benchmark(results / "benchmarks" / "inter_epochs_009.tsv", 99.0)
    _benchmark(results / "benchmarks" / "report.tsv", 99.0)
    return ReportInputs(
        metrics=results / "eval" / "metrics.json",
        cmc=results / "eval" / "cmc.parquet",
        features=results / "eval" / "features.parquet",
        dataset_root=root,
        training_logs={
            name: results / name / "log.parquet" for name in ("clip", "prompt", "intra")
        },
        epochs=epochs,
        attribute_zero_shot=results / "clip" / "zero_shot.json",
        references={"zeroshot": results / "reference" / "zeroshot.json"},
        benchmarks={
            name: results / "benchmarks" / f"{name}.tsv"
            for name in ("intra", "inter_epochs_003", "inter_epochs_004")
        },
    )


def _assert_all_written(out: Path) -> None:
    for name in OUTPUTS:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, name


def test_full_run_writes_every_output_with_the_metrics(run, tmp_path: Path) -> None:
    out = tmp_path / "report"
    summary = build_report(run, out)
    _assert_all_written(out)
    assert summary["skipped"] == {}
    assert set(summary["outputs"]) == set(OUTPUTS)

    table = pd.read_csv(out / "metrics.csv")
    assert table["model"].iloc[0] == "CCAFL"  # the trained model comes first
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
    assert "report" not in per_rule.index  # not named by the rule: never read
    assert sorted(timings.loc[timings["level"] == "epoch", "epoch"]) == [3, 4]

    zero_shot = pd.read_csv(out / "zero_shot.csv")
    assert zero_shot.loc[0, "attribute"] == "hair"
    assert zero_shot.loc[0, "precision@10"] == pytest.approx(0.6)


def test_metrics_table_shows_the_zero_shot_reference_rows(run, tmp_path: Path) -> None:
    """Every retrieval feature of the pretrained CLIP, raw and calibrated, beside the model."""
    out = tmp_path / "report"
    write_metrics(run.metrics, out, run.references)
    table = pd.read_csv(out / "metrics.csv")
    reference = json.loads(run.references["zeroshot"].read_text())
    assert len(table) == 1 + 3 * 2
    for feature in ("pooled", "projection", "concat"):
        for way in ("raw", "calibrated"):
            name = f"pretrained CLIP (captions), no ReID training: {feature} ({way})"
            row = table[table["model"] == name]
            assert len(row) == 1, name
            assert row["mAP"].iloc[0] == pytest.approx(reference[feature][way]["mAP"])
            assert row["rank-1"].iloc[0] == pytest.approx(reference[feature][way]["rank1"])
    markdown = (out / "metrics.md").read_text()
    assert (
        "| fake | pretrained CLIP (captions), no ReID training: concat (calibrated) | 22.1 |"
        in (markdown)
    )
    assert "Training that does not beat the best of them" in markdown


def test_a_missing_reference_file_leaves_only_the_model_row(run, tmp_path: Path) -> None:
    run.references["zeroshot"].unlink()
    out = tmp_path / "report"
    write_metrics(run.metrics, out, run.references)
    assert list(pd.read_csv(out / "metrics.csv")["model"]) == ["CCAFL"]


def test_only_the_named_epochs_are_drawn(run, tmp_path: Path) -> None:
    """The stale epoch 9 of the fixture is on disk but not named: left out of every plot."""
    assert ical_start(run.epochs) == 4  # E_adv as the logs show it
    run.epochs.pop(4)
    run.benchmarks.pop("inter_epochs_004")
    assert list(association_table(run.epochs)["epoch"]) == [3]
    jobs = benchmark_table(run.benchmarks)
    assert sorted(jobs["epoch"].dropna()) == [3] and "report" not in set(jobs["rule"])
    assert ical_start(run.epochs) is None


def test_missing_optional_inputs_give_placeholders(run, tmp_path: Path) -> None:
    run.epochs.clear()  # epochs == intra_epochs: no stage 3
    run.attribute_zero_shot = None
    run.dataset_root = tmp_path / "no-images"
    for path in run.benchmarks.values():  # named by the rule, but not on disk
        path.unlink()
    out = tmp_path / "report"
    summary = build_report(run, out)
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
    for _, metrics_file in run.epochs.values():  # a dataset without train_truth: no assoc_*
        metrics = json.loads(metrics_file.read_text())
        metrics_file.write_text(json.dumps({k: v for k, v in metrics.items() if "assoc" not in k}))
    # No caption-pretrained CLIP: the rule names neither its log nor its zero_shot.json.
    run.attribute_zero_shot = None
    run.training_logs.pop("clip")
    out = tmp_path / "report"
    summary = build_report(run, out)
    _assert_all_written(out)
    # The clusters panel is still drawn.
    assert set(summary["skipped"]) == {"zero_shot.csv"}
    assert "captions" in summary["skipped"]["zero_shot.csv"]


def test_nothing_at_all_still_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "report"
    summary = build_report(ReportInputs(), out)
    _assert_all_written(out)
    # The front page is always made: of the placeholders, which say why.
    assert set(summary["skipped"]) == set(OUTPUTS) - {PAGE}
    assert "not available" in (out / PAGE).read_text()


def _page_images(page: str) -> list[bytes]:
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    return [base64.b64decode(uri, validate=True) for uri in uris]


def test_front_page_is_one_file_with_the_table_and_every_plot(run, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report(run, out, "my-run")
    page = (out / PAGE).read_text()
    assert "<title>ccafl run: my-run</title>" in page
    images = _page_images(page)
    assert len(images) == 4 and all(png[:8] == PNG_SIGNATURE for png in images)
    assert images[0] == (out / "association.png").read_bytes()
    assert "src='http" not in page and "href=" not in page  # nothing to fetch
    # The metrics table: the trained model highlighted first, then the reference rows.
    rows = re.findall(r"<tr( class=\"trained\")?><td>([^<]+)</td><td>([\d.]+)</td>", page)
    assert rows[0] == (' class="trained"', "CCAFL", "43.2")
    assert len(rows) == len(pd.read_csv(out / "metrics.csv")) > 1
    assert not any(trained for trained, _, _ in rows[1:])


def test_open_report_prints_the_page_and_opens_it_where_there_is_a_display(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from ccafl import cli

    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    monkeypatch.setenv("DISPLAY", ":0")
    page = tmp_path / "results" / "run" / "report" / PAGE
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    assert cli.main(["open-report", "--results", str(tmp_path / "results" / "run")]) in (0, None)
    printed = capsys.readouterr().out.split()
    assert printed == [str(page.resolve()), page.resolve().as_uri()]
    assert opened == [page.resolve().as_uri()]
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    cli.main(["open-report", "--results", str(tmp_path / "results" / "run")])
    assert len(opened) == 1  # no display: printed only


def test_open_report_without_a_page_is_one_line_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ccafl", "open-report", "--results", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "index.html does not exist" in lines[0] and "make demo" in lines[0]


def test_retrieval_examples_are_ranked_by_the_evaluations_distance() -> None:
    """With eval.distance: euclidean the examples follow the squared distance of the stored
    features, not their cosine (the two orders differ for features of unequal norms)."""
    from ccafl.report.plots import retrieval_ranking

    rng = np.random.default_rng(0)
    g = rng.standard_normal((30, 4)) * rng.uniform(0.1, 6.0, (30, 1))
    q = rng.standard_normal((3, 4))
    gallery = pd.DataFrame({"feature": list(g), "pid": rng.integers(1, 5, 30), "camera": 1})
    query = pd.DataFrame({"feature": list(q), "pid": [9, 9, 9], "camera": 0})
    euclidean = retrieval_ranking(query, gallery, top_k=5, distance="euclidean")
    cosine = retrieval_ranking(query, gallery, top_k=5)
    for i, order in euclidean:
        expected = np.argsort(((g - q[i]) ** 2).sum(axis=1), kind="stable")[:5]
        np.testing.assert_array_equal(order, expected)
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in zip(euclidean, cosine, strict=True))
