"""Command-line overrides: nested --config values and override files, through real dry runs.

Snakemake reads a nested ``--config 'train={"epochs": 3}'`` with YAML's BaseLoader, so every
nested scalar arrives as a string; the Snakefile types them by the schema before validating.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import snakemake_dry_run

from ccafl.config import coerce_to_schema, load_schema, validate

REPO = Path(__file__).resolve().parents[1]


def dry_run(tmp_path: Path, *args: str, target: str = "all", check: bool = True) -> str:
    return snakemake_dry_run(tmp_path, *args, target=target, check=check, timeout=120)


def job_counts(out: str) -> dict[str, int]:
    table = out.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def stage_config(out: str, stage: str, run: str = "") -> dict:
    """The --set JSON a planned `python -m ccafl <stage>` command of ``run`` receives."""
    for match in re.finditer(rf"-m ccafl {stage} --set '([^']*)'[^\n]*", out):
        if f"results/synthetic/{run}{stage}" in match[0]:
            return json.loads(match[1])
    raise AssertionError(f"no {stage} command of run {run!r} in the dry run")


def test_nested_numeric_override_on_the_command_line(tmp_path: Path) -> None:
    out = dry_run(tmp_path, "--config", 'train={"epochs": 20}')
    # Epochs 6-20 (E_intra = 5 in the demo) in blocks of train.epochs_per_job = 7.
    blocks = {rule for rule in job_counts(out) if rule.startswith("inter_epochs_")}
    assert blocks == {"inter_epochs_006", "inter_epochs_013", "inter_epochs_020"}
    assert stage_config(out, "intra")["train"]["epochs"] == 20


def test_nested_float_boolean_and_null_overrides(tmp_path: Path) -> None:
    override = 'train={"lr": 7e-4, "amp": false, "iters_per_epoch": null, "K": 2}'
    train = stage_config(dry_run(tmp_path, "--config", override), "intra")["train"]
    assert train["lr"] == pytest.approx(7e-4) and isinstance(train["lr"], float)
    assert train["amp"] is False and train["iters_per_epoch"] is None and train["K"] == 2


def test_override_file(tmp_path: Path) -> None:
    mine = tmp_path / "my.yaml"
    mine.write_text("train:\n  epochs: 16\n  epochs_per_job: 4\n  lam: 0.6\n")
    out = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"), str(mine))
    blocks = {rule for rule in job_counts(out) if rule.startswith("inter_epochs_")}
    assert blocks == {"inter_epochs_006", "inter_epochs_010", "inter_epochs_014"}
    train = stage_config(out, "intra")["train"]
    assert train["lam"] == 0.6 and train["K"] == 4  # the rest comes from config.yaml


def test_variant_overrides_from_the_command_line_are_typed(tmp_path: Path) -> None:
    out = dry_run(
        tmp_path,
        "--config",
        'ablation={"sweeps": {"lr7": {"train": {"lr": 7e-4}}}, "seeds": [5]}',
        target="sweep",
    )
    train = stage_config(out, "intra", run="ablation/lr7-s5/")["train"]
    assert train["lr"] == pytest.approx(7e-4) and train["seed"] == 5


def test_a_value_that_does_not_parse_is_still_named(tmp_path: Path) -> None:
    out = dry_run(tmp_path, "--config", 'train={"epochs": "three"}', check=False)
    assert "'three' is not of type 'integer'" in out


def test_coercion_follows_the_schema_only() -> None:
    config = {
        "dataset": {"name": "2024", "root": "1e3"},  # strings in the schema: stay strings
        "train": {"epochs": "3", "lr": "3.5e-4", "amp": "True", "iters_per_epoch": "~"},
        "clip": {"quick_gelu": "false", "pretrained": "null", "model": "1"},
        "ablation": {"seeds": ["0", "1"]},
        "eval": {"batch_size": "3.5"},  # not an integer: left for validation to report
    }
    coerce_to_schema(config, load_schema())
    assert config["dataset"] == {"name": "2024", "root": "1e3"}
    assert config["train"] == {"epochs": 3, "lr": 3.5e-4, "amp": True, "iters_per_epoch": None}
    assert config["clip"] == {"quick_gelu": False, "pretrained": None, "model": "1"}
    assert config["ablation"]["seeds"] == [0, 1]
    assert config["eval"]["batch_size"] == "3.5"
    config["eval"]["batch_size"] = 8
    config["clip"]["model"] = "RN50"
    validate(config)
