"""Ablation and sweep variants: named config overrides run by the same rules (paper Table IV).

A run is the main run (prefix "") or a variant at one seed, under
``results/<name>/ablation/<variant>-s<seed>/``. The Snakefile asks this module for each run's
config, so a variant is validated like any config and a typo names its key.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ccafl.config import coerce_to_schema, deep_merge, validate
from ccafl.io import write_text

RUN_PATTERN = re.compile(r"^ablation/(?P<variant>[A-Za-z0-9_.+=-]+)-s(?P<seed>\d+)/$")
# Sections of the config that are the same for every run of a dataset.
SHARED_SECTIONS = ("dataset", "synthetic", "clip_pretrain", "resources", "ablation")


def run_id(variant: str, seed: int) -> str:
    return f"ablation/{variant}-s{seed}/"


def runs(config: dict, group: str = "variants") -> list[str]:
    """Run prefixes of ``ablation.<group>`` (variants or sweeps) over ``ablation.seeds``."""
    ablation = config["ablation"]
    return [run_id(v, s) for v in ablation[group] for s in ablation["seeds"]]


def run_config(config: dict, run: str) -> dict:
    """The validated config of a run: the main config, or a variant's overrides on top of it.

    Memoised (Snakemake asks once per job and input function); do not mutate the result.
    """
    if run == "":
        return config
    return _run_config(json.dumps(config, sort_keys=True), run)


@lru_cache(maxsize=4096)
def _run_config(config_json: str, run: str) -> dict:
    config = json.loads(config_json)
    match = RUN_PATTERN.match(run)
    if match is None:
        raise ValueError(f"not a run prefix: {run!r} (expected ablation/<variant>-s<seed>/)")
    variant, seed = match["variant"], int(match["seed"])
    ablation = config["ablation"]
    overrides = {**ablation["variants"], **ablation["sweeps"]}.get(variant)
    if overrides is None:
        known = sorted({**ablation["variants"], **ablation["sweeps"]})
        raise ValueError(f"unknown ablation variant {variant!r}; known: {known}")
    for section in SHARED_SECTIONS:
        if section in overrides:
            raise ValueError(f"variant {variant!r} may not override the shared section {section!r}")
    # Overrides given on the command line arrive as strings (see coerce_to_schema).
    overrides = coerce_to_schema(copy.deepcopy(overrides))
    merged = deep_merge(config, overrides)
    merged["train"]["seed"] = seed
    return validate(merged)


def sections_json(config: dict, sections: tuple[str, ...]) -> str:
    return json.dumps({s: config[s] for s in sections}, sort_keys=True)


def variant_table(config: dict, results: str | Path, group: str = "variants") -> pd.DataFrame:
    """mAP / rank-1 per variant and seed, read from each run's eval/metrics.json."""
    rows = []
    for run in runs(config, group):
        match = RUN_PATTERN.match(run)
        metrics = json.loads((Path(results) / run / "eval" / "metrics.json").read_text())
        rows.append(
            {
                "variant": match["variant"],
                "seed": int(match["seed"]),
                "mAP": 100 * metrics["mAP"],
                "rank1": 100 * metrics["rank1"],
                "mINP": 100 * metrics["mINP"],
            }
        )
    return pd.DataFrame(rows)


def _switches(config: dict, variant: str) -> dict:
    cfg = run_config(config, run_id(variant, config["ablation"]["seeds"][0]))
    losses = cfg["train"]["losses"]
    return {
        "L_intra2": "x" if losses["intra2"] else "",
        "L_i2tce": "x" if losses["i2tce"] else "",
        "L_ICAL": "x" if losses["ical"] else "",
        "backbone": "CLIP" if cfg["clip"]["pretrained"] else "random init",
    }


def write_variant_table(
    config: dict, results: str | Path, out: str | Path, group: str = "variants"
) -> pd.DataFrame:
    """Markdown table: one row per variant with mean +- std over seeds, and the per-seed values."""
    table = variant_table(config, results, group)
    summary = table.groupby("variant", sort=False).agg(
        mAP=("mAP", "mean"),
        mAP_std=("mAP", "std"),
        rank1=("rank1", "mean"),
        rank1_std=("rank1", "std"),
        seeds=("seed", "count"),
    )
    lines = [
        "| variant | L_intra2 | L_i2tce | L_ICAL | backbone | mAP (%) | rank-1 (%) | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary.iterrows():
        s = (
            _switches(config, variant)
            if group == "variants"
            else dict.fromkeys(("L_intra2", "L_i2tce", "L_ICAL", "backbone"), "")
        )
        per_seed = table[table["variant"] == variant]
        maps = ", ".join(f"{v:.1f}" for v in per_seed["mAP"])
        lines.append(
            f"| {variant} | {s['L_intra2']} | {s['L_i2tce']} | {s['L_ICAL']} | {s['backbone']} "
            f"| {row.mAP:.1f} ± {0 if pd.isna(row.mAP_std) else row.mAP_std:.1f} ({maps}) "
            f"| {row.rank1:.1f} ± {0 if pd.isna(row.rank1_std) else row.rank1_std:.1f} "
            f"| {int(row.seeds)} |"
        )
    write_text("\n".join(lines) + "\n", out)
    write_text(table.to_csv(index=False), Path(out).with_suffix(".csv"))
    return table
