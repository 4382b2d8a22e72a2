"""Reference rows (zero-shot, untrained, supervised) and the calibration table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import snakemake_dry_run, tiny_config

from ccafl.ablation import CALIBRATION_TARGETS, calibration_table, write_calibration
from ccafl.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _metrics(path: Path, m_ap: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mAP": m_ap, "rank1": m_ap, "mINP": m_ap}))
    return path


def _reference(path: Path, best: float, feature: str = "projection") -> Path:
    path.write_text(json.dumps({"best": {"mAP": best, "feature": feature, "way": "raw"}}))
    return path


def test_calibration_ratios_and_targets(tmp_path: Path) -> None:
    result = calibration_table(
        _reference(tmp_path / "z.json", 0.30),
        _reference(tmp_path / "u.json", 0.05, "pooled"),
        {0: _metrics(tmp_path / "c0.json", 0.62), 1: _metrics(tmp_path / "c1.json", 0.58)},
        {0: _metrics(tmp_path / "s0.json", 0.70), 1: _metrics(tmp_path / "s1.json", 0.70)},
    )
    points = result["points"]
    assert points["ccafl"]["mAP"] == pytest.approx(60.0)
    assert points["ccafl"]["std"] == pytest.approx(2.8284, abs=1e-3)
    ratios = {r["ratio"]: r for r in result["ratios"]}
    assert len(ratios) == len(CALIBRATION_TARGETS)
    assert ratios["CCAFL / best zero-shot"]["value"] == pytest.approx(2.0)
    assert ratios["CCAFL / supervised"]["value"] == pytest.approx(60 / 70)
    assert ratios["CCAFL / supervised"]["met"]  # 0.857 >= 0.85
    assert ratios["best zero-shot / best untrained"]["value"] == pytest.approx(6.0)
    out = tmp_path / "calibration.md"
    write_calibration(result, out, tmp_path / "calibration.json")
    text = out.read_text()
    assert "| CCAFL / supervised | 0.86 | >= 0.85 | yes |" in text
    assert (
        json.loads((tmp_path / "calibration.json").read_text())["points"]["supervised"]["mAP"] == 70
    )
    low = calibration_table(
        _reference(tmp_path / "z.json", 0.50),
        _reference(tmp_path / "u.json", 0.05),
        {0: _metrics(tmp_path / "c0.json", 0.55)},
        {0: _metrics(tmp_path / "s0.json", 0.70)},
    )
    assert not {r["ratio"]: r for r in low["ratios"]}["CCAFL / best zero-shot"]["met"]


def test_calibration_with_the_unsupervised_run(tmp_path: Path) -> None:
    result = calibration_table(
        _reference(tmp_path / "z.json", 0.30),
        _reference(tmp_path / "u.json", 0.05),
        {0: _metrics(tmp_path / "c0.json", 0.60)},
        {0: _metrics(tmp_path / "s0.json", 0.70)},
        {0: _metrics(tmp_path / "l0.json", 0.42), 1: _metrics(tmp_path / "l1.json", 0.36)},
    )
    ratios = {r["ratio"]: r for r in result["ratios"]}
    assert ratios["USL / best zero-shot"]["value"] == pytest.approx(1.3)
    assert ratios["USL / best zero-shot"]["met"]
    assert ratios["USL / CCAFL (ICS)"]["value"] == pytest.approx(39 / 60)
    assert ratios["USL / supervised"]["met"] is None  # reported, no target
    out = tmp_path / "calibration.md"
    write_calibration(result, out, tmp_path / "calibration.json")
    text = out.read_text()
    assert (
        "| USL (no labels: stage A clusters + CCAFL), mean ± std | 39.0 ± 4.2 (42.0, 36.0) |"
        in text
    )
    assert "| USL / supervised | 0.56 | (reported) | |" in text


def test_only_the_supervised_run_reads_true_labels(tmp_path: Path) -> None:
    """Dry run of the ablation DAG: the supervised variant's stage-3 jobs get the labels table
    made from the truth table; no ICS run's job does, and no training job names the truth
    except for stage 3's diagnostics in the unsupervised runs."""
    out = snakemake_dry_run(tmp_path, target="ablation")
    lines = [line for line in out.splitlines() if " -m ccafl " in line]
    inter = [line for line in lines if " -m ccafl inter-epoch " in line]
    assert inter and any(" -m ccafl supervised-labels " in line for line in lines)
    for line in inter:
        supervised = "results/synthetic/ablation/supervised-s" in line
        assert ("--labels results/synthetic/supervised/labels.parquet" in line) == supervised
    training = ("prompt", "intra", "inter-epoch", "final", "local-clusters")
    diagnostics_truth = " --truth results/synthetic/ics/train_truth.parquet"
    for line in lines:
        if re.search(r" -m ccafl (" + "|".join(training) + ") ", line):
            # Stage 3's diagnostics (after each epoch is written) read the truth table from
            # --ics-dir; an unsupervised run's --ics-dir is its clusters folder, so it names
            # the table for them. Nothing else may.
            unsupervised = re.search(r"results/synthetic/ablation/(usl|calr)-s", line)
            if " -m ccafl inter-epoch " in line and unsupervised:
                assert diagnostics_truth in line
                line = line.replace(diagnostics_truth, "")
            assert "train_truth" not in line


def test_reference_rows_on_a_tiny_world(tiny_dataset: dict) -> None:
    from ccafl.reference import reference_metrics

    config = tiny_config(tiny_dataset["root"])
    clip = reference_metrics(
        Settings.from_config(config),
        tiny_dataset["clip"],
        tiny_dataset["root"],
        tiny_dataset["ics"],
    )
    untrained = reference_metrics(
        Settings.from_config(config),
        None,
        tiny_dataset["root"],
        tiny_dataset["ics"],
        untrained=True,
    )
    for result in (clip, untrained):
        rows = [
            result[f][w] for f in ("pooled", "projection", "concat") for w in ("raw", "calibrated")
        ]
        assert all(0 < row["mAP"] <= 1 for row in rows)
        assert result["best"]["mAP"] == max(row["mAP"] for row in rows)
    assert untrained["source"] == "untrained" and clip["source"] == "captions"


def test_calr_component_table_marks_each_switched_off_component(tmp_path: Path) -> None:
    """The default config's calr variant and its three calr-* sweeps: each sweep switches
    exactly one component off, and the table's mean ± std and F-scores come from the files."""
    import yaml

    from ccafl.ablation import CALR_COMPONENTS, calr_switches, write_calr_component_table
    from ccafl.config import validate

    config = validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    off = {"calr-norefine": "refinement", "calr-noalign": "camera alignment"}
    off["calr-noweights"] = "entropy weights"
    assert all(calr_switches(config, "calr").values())
    for variant, component in off.items():
        switches = calr_switches(config, variant)
        assert [c for c in CALR_COMPONENTS if not switches[c]] == [component], variant
    runs = {}
    for variant, seed, m_ap, refined in (("calr", 0, 0.30, 0.6), ("calr", 1, 0.34, 0.5)):
        epoch = tmp_path / f"{variant}{seed}_epoch.json"
        epoch.write_text(
            json.dumps(
                {"clusters_refined_bcubed_f_score": refined, "clusters_global_bcubed_f_score": 0.4}
            )
        )
        runs[(variant, seed)] = (_metrics(tmp_path / f"{variant}{seed}.json", m_ap), epoch)
    runs[("calr-norefine", 0)] = (_metrics(tmp_path / "nr.json", 0.2), tmp_path / "nr_e.json")
    (tmp_path / "nr_e.json").write_text("{}")  # no truth table: no F-scores
    best = {"mAP": 0.25, "rank1": 0.25, "feature": "projection", "way": "raw"}
    (tmp_path / "zs.json").write_text(json.dumps({"best": best}))
    out = tmp_path / "calr.md"
    table = write_calr_component_table(
        config, runs, out, tmp_path / "calr.csv", tmp_path / "zs.json"
    )
    text = out.read_text()
    assert "| zero-shot CLIP (projection, raw) | | | | 25.0 | 25.0 | | | - |" in text
    assert "| calr | x | x | x | 32.0 ± 2.8 (30.0, 34.0) | 32.0 ± 2.8 | 0.550 ± 0.071 " in text
    assert "| calr-norefine |  | x | x | 20.0 ± 0.0 (20.0) |" in text
    assert len(table) == 3 and table["refined_bcubed_f"].isna().sum() == 1


def test_calr_ablation_plan_runs_the_four_calr_runs_per_seed(tmp_path: Path) -> None:
    out = snakemake_dry_run(tmp_path, target="calr_ablation")
    line = next(line for line in out.splitlines() if " -m ccafl calr-table " in line)
    for variant in ("calr", "calr-norefine", "calr-noalign", "calr-noweights"):
        for seed in (0, 1):
            run = f"results/synthetic/ablation/{variant}-s{seed}/"
            assert f"{run}eval/metrics.json {run}inter/epoch_040/metrics.json" in line
