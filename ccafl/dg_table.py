"""The domain-generalisation table: every model on every held-out target, and their average.

"Average" is the plain mean over targets, as CLIP-FGDI's tables have it
(``../shared/reference/clip-fgdi-spec.md`` section 4). A model trained at several seeds is
shown as the mean over its seeds with the seeds' standard deviation beside it; a zero-shot
row is the reference's best retrieval feature (``reference`` JSON's ``best``), the bar a
trained model must clear.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ccafl.errors import UserError
from ccafl.io import write_json, write_text

AVERAGE = "Average"


def _metrics(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    return data.get("best", data)  # a reference JSON's best feature, or eval/metrics.json


def dg_table(runs: list[tuple[str, int, str, str | Path]]) -> pd.DataFrame:
    """``runs``: (model, seed, target, metrics file) per evaluation. One row per model and
    target (mean and std over seeds of mAP and rank-1, in %), then the model's Average row
    (per seed the mean over targets, then mean and std over seeds)."""
    rows = []
    for model, seed, target, path in runs:
        metrics = _metrics(path)
        rows.append(
            {
                "model": model,
                "seed": int(seed),
                "target": target,
                "mAP": 100 * metrics["mAP"],
                "rank-1": 100 * metrics["rank1"],
            }
        )
    per_run = pd.DataFrame(rows, columns=["model", "seed", "target", "mAP", "rank-1"])
    averages = per_run.groupby(["model", "seed"], sort=False)[["mAP", "rank-1"]].mean()
    per_run = pd.concat([per_run, averages.reset_index().assign(target=AVERAGE)])
    grouped = per_run.groupby(["model", "target"], sort=False)
    table = grouped[["mAP", "rank-1"]].mean()
    spread = grouped[["mAP", "rank-1"]].std(ddof=1).fillna(0.0)
    table["mAP std"], table["rank-1 std"] = spread["mAP"], spread["rank-1"]
    table["seeds"] = grouped["seed"].nunique()
    return table.reset_index()


def _markdown(table: pd.DataFrame) -> str:
    targets = list(dict.fromkeys(table["target"]))
    header = "| model | " + " | ".join(targets) + " |"
    lines = [header, "|---|" + "---|" * len(targets)]
    for model, rows in table.groupby("model", sort=False):
        cells = []
        for target in targets:
            row = rows[rows["target"] == target]
            if row.empty:
                cells.append("-")
                continue
            r = row.iloc[0]
            spread = f" ± {r['mAP std']:.1f}" if r["seeds"] > 1 else ""
            cells.append(f"{r['mAP']:.1f}{spread} / {r['rank-1']:.1f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_dg_table(
    runs: list[tuple[str, int, str, str | Path]],
    out: str | Path,
    csv: str | Path,
    json_out: str | Path,
) -> pd.DataFrame:
    table = dg_table(runs)
    seeds = sorted({int(seed) for _, seed, _, _ in runs})
    text = (
        "# Domain generalisation: held-out targets\n\n"
        "mAP / rank-1 in % on each target's query and gallery (never read by training); "
        f"{AVERAGE} = the mean over targets. Trained models: mean ± std of mAP over training "
        f"seeds {seeds}.\n\n" + _markdown(table) + "\n"
    )
    write_text(text, out)
    write_text(table.to_csv(index=False), csv)
    recorded = [
        {"model": model, "seed": int(seed), "target": target, "metrics": str(path)}
        for model, seed, target, path in runs
    ]
    write_json({"rows": table.to_dict(orient="records"), "runs": recorded}, json_out)
    return table


def recorded_runs(table_json: str | Path) -> list[tuple[str, int, str, str]]:
    """The evaluations an earlier DG table was built from (its JSON's ``runs``), so that the
    tables of several held-out runs (a leave-one-out) make one table with one Average."""
    path = Path(table_json)
    data = json.loads(path.read_text())
    if "runs" not in data:
        raise UserError(
            f"{path}: no 'runs' list (written before DG tables recorded their evaluations); "
            "rerun its dg_table rule (snakemake dg --forcerun dg_table)"
        )
    return [(r["model"], int(r["seed"]), r["target"], r["metrics"]) for r in data["runs"]]
