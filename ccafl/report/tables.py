"""The report's tables: metrics beside the reference rows, attribute zero-shot, job timings,
association quality per epoch, CALR's cluster quality per epoch."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pandas as pd

from ccafl.errors import UserError
from ccafl.io import write_text
from ccafl.report.inputs import NotAvailable, given, read_json

log = logging.getLogger(__name__)

#: Pipeline order of the rules in the timings plot; rules not listed come after, by name.
RULE_ORDER = (
    "synthesize",
    "ics",
    "clip_pretrain",
    "prompt",
    "intra",
    "inter_epochs",
    "final",
    "evaluate",
)
# Stage-3 jobs: one per block of epochs, named by the first epoch of the block.
_EPOCH_BENCHMARK = re.compile(r"^inter_epochs_(\d+)$")


def placeholder_csv(path: Path, reason: str) -> Path:
    return write_text(
        pd.DataFrame({"note": [f"not available: {reason}"]}).to_csv(index=False), path
    )


REFERENCE_FEATURES = ("pooled", "projection", "concat")
REFERENCE_WAYS = ("raw", "calibrated")
_REFERENCE_NAMES = {
    "zeroshot": "pretrained CLIP ({source}), no ReID training",
    "untrained": "untrained network, no training",
}


def _metrics_row(metrics: dict, model: str | None = None) -> dict:
    return {
        "dataset": metrics.get("dataset"),
        "model": model if model is not None else metrics.get("model"),
        "mAP": metrics["mAP"],
        "mINP": metrics["mINP"],
        "rank-1": metrics["rank1"],
        "rank-5": metrics["rank5"],
        "rank-10": metrics["rank10"],
        "n_query": metrics.get("n_query"),
        "n_gallery": metrics.get("n_gallery"),
    }


def reference_rows(name: str, reference: dict) -> list[dict]:
    """One row per retrieval feature and way (raw, calibrated) of a reference JSON."""
    label = _REFERENCE_NAMES.get(name, name).format(source=reference.get("source", "?"))
    return [
        _metrics_row(reference[feature][way], f"{label}: {feature} ({way})")
        for feature in REFERENCE_FEATURES
        if feature in reference
        for way in REFERENCE_WAYS
        if way in reference[feature]
    ]


def metrics_table(
    metrics_file: Path | None, references: dict[str, Path] | None = None
) -> pd.DataFrame:
    """The evaluation's mAP, mINP, CMC rank-1/5/10 (fractions) and split sizes, first row;
    then the reference rows (e.g. the pretrained CLIP zero-shot per retrieval feature), so a
    reader sees whether training beat its starting point."""
    rows = [_metrics_row(read_json(given(metrics_file, "evaluation metrics")))]
    for name, path in (references or {}).items():
        try:
            rows.extend(reference_rows(name, read_json(Path(path))))
        except NotAvailable as why:
            log.info("metrics: reference %s left out: %s", name, why)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, numeric: set[str]) -> str:
    """A GitHub-flavoured Markdown table; ``numeric`` columns are right-aligned."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in table.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_metrics(
    metrics_file: Path | None, out_dir: str | Path, references: dict[str, Path] | None = None
) -> None:
    """metrics.csv (fractions, as in metrics.json) and metrics.md (percent, one decimal)."""
    out_dir = Path(out_dir)
    table = metrics_table(metrics_file, references)
    write_text(table.to_csv(index=False), out_dir / "metrics.csv")
    shown = table.copy()
    for column in ("mAP", "mINP", "rank-1", "rank-5", "rank-10"):
        shown[column] = [f"{100 * v:.1f}" for v in table[column]]
    text = (
        "# Retrieval metrics (Market-1501 protocol)\n\n"
        "mAP, mINP and CMC rank-k in percent over the query set; gallery images of the "
        "query's identity seen by the query's camera, and junk images, are excluded.\n\n"
        + _markdown(shown, {c for c in table if table[c].dtype.kind in "if"})
    )
    if len(table) > 1:
        text += (
            "\nThe first row is the trained model. The rows below it are references: the "
            "pretrained CLIP that training starts from, evaluated without any ReID training "
            "for each retrieval feature, raw (the tower's outputs) and calibrated (BN-necks "
            "set from the training images, as f is at the first training step). Training "
            "that does not beat the best of them has learnt nothing.\n"
        )
    write_text(text, out_dir / "metrics.md")


def attribute_table(zero_shot: dict) -> pd.DataFrame:
    """One row per attribute of clip/zero_shot.json (`ccafl.training.zero_shot`)."""
    return pd.DataFrame(
        [
            {
                "attribute": name,
                "precision@10": r["mean_precision_at_10"],
                "chance": r["mean_chance"],
                "zero-shot accuracy": r["classification_accuracy"],
                "majority": r["classification_chance"],
            }
            for name, r in zero_shot["attributes"].items()
        ]
    )


def zero_shot_table(zero_shot_file: Path | None) -> pd.DataFrame:
    """Per-attribute zero-shot retrieval of the caption-pretrained CLIP (clip/zero_shot.json)."""
    if zero_shot_file is None:
        raise NotAvailable("clip.pretrained is not 'captions', so no CLIP was pretrained here")
    return attribute_table(read_json(Path(zero_shot_file)))


def benchmark_table(benchmarks: dict[str, Path]) -> pd.DataFrame:
    """One row per benchmarked job: rule, epoch (inter epochs), wall seconds, peak RSS.

    ``benchmarks``: job name (the rule's; stage-3 blocks ``inter_epochs_<first epoch>``) ->
    its Snakemake benchmark file. A file that is missing or unreadable is left out.
    """
    rows = []
    for name, path in benchmarks.items():
        path = Path(path)
        if not path.is_file():
            log.info("timings: no benchmark file %s (job %s) left out", path, name)
            continue
        try:
            bench = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            log.warning("unreadable benchmark file %s skipped", path)
            continue
        if bench.empty or "s" not in bench:
            continue
        match = _EPOCH_BENCHMARK.match(name)
        rows.append(
            {
                "rule": "inter_epochs" if match else name,
                "epoch": int(match.group(1)) if match else None,
                # Snakemake's `repeat` writes one row per repetition: report their mean.
                "seconds": float(pd.to_numeric(bench["s"], errors="coerce").mean()),
                "max_rss_mb": float(pd.to_numeric(bench.get("max_rss"), errors="coerce").max())
                if "max_rss" in bench
                else math.nan,
            }
        )
    if not rows:
        raise NotAvailable("no benchmark files of this run's jobs")
    return pd.DataFrame(rows).astype({"epoch": "Int64"})


def _rule_rank(rule: str) -> tuple[int, str]:
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), rule)


def timings_summary(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule (inter epochs summed) then per inter epoch; ``level`` tells the two apart."""
    per_rule = (
        jobs.groupby("rule", sort=False)
        .agg(jobs=("seconds", "size"), seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"))
        .reset_index()
    )
    per_rule["level"] = "rule"
    per_rule["epoch"] = pd.array([None] * len(per_rule), dtype="Int64")
    per_rule = per_rule.iloc[
        sorted(range(len(per_rule)), key=lambda i: _rule_rank(per_rule.rule[i]))
    ]
    epochs = jobs[jobs["rule"] == "inter_epochs"].sort_values("epoch").copy()
    epochs["level"] = "epoch"
    epochs["jobs"] = 1
    columns = ["level", "rule", "epoch", "jobs", "seconds", "max_rss_mb"]
    return pd.concat([per_rule[columns], epochs[columns]], ignore_index=True)


def inter_log(epochs: dict[int, tuple[Path, Path]]) -> pd.DataFrame:
    tables = [
        pd.read_parquet(log_file)
        for _, (log_file, _) in sorted(epochs.items())
        if Path(log_file).is_file()
    ]
    if not tables:
        raise NotAvailable("no inter-camera epochs (train.epochs == train.intra_epochs)")
    return pd.concat(tables, ignore_index=True).sort_values(["epoch", "step"], kind="stable")


def association_table(epochs: dict[int, tuple[Path, Path]]) -> pd.DataFrame:
    rows = []
    for epoch, (_, metrics_file) in sorted(epochs.items()):
        if Path(metrics_file).is_file():
            rows.append({**read_json(Path(metrics_file)), "epoch": epoch})
    if not rows:
        raise NotAvailable("no inter-camera epochs (train.epochs == train.intra_epochs)")
    return pd.DataFrame(rows).sort_values("epoch")


#: CALR Fig. 5's cluster sets (stage B, train.labels: refined) and each set's measures, as
#: ``clusters_<set>_<measure>`` in every stage-B epoch's metrics.json.
CALR_CLUSTER_SETS = ("global", "local", "refined")
CALR_CLUSTER_MEASURES = tuple(
    f"{kind}_{score}"
    for kind in ("pairwise", "bcubed")
    for score in ("precision", "recall", "f_score")
) + ("expansion",)


def calr_cluster_table(epoch_metrics: dict[int, Path]) -> pd.DataFrame:
    """One row per stage-B epoch: ``epoch`` and every ``clusters_<set>_<measure>``.

    No ``clusters_*`` or ``assoc_*`` key in any file: the run had no training truth, and the
    table is `NotAvailable`. A file that has some but lacks one is a `UserError` naming the
    file and the key (a run of another mode, or a metrics file of an older version).
    """
    if not epoch_metrics:
        raise UserError("no stage-B epoch given (train.epochs == train.intra_epochs)")
    # A file that is not there is an error here, not a placeholder: the rule names each one.
    metrics = {
        epoch: json.loads(Path(path).read_text()) for epoch, path in sorted(epoch_metrics.items())
    }
    measured = ("clusters_", "assoc_")
    if not any(key.startswith(measured) for row in metrics.values() for key in row):
        raise NotAvailable("no training truth table: the cluster quality was not measured")
    columns = [f"clusters_{s}_{m}" for s in CALR_CLUSTER_SETS for m in CALR_CLUSTER_MEASURES]
    for epoch, row in metrics.items():
        missing = [key for key in columns if key not in row]
        if missing:
            raise UserError(
                f"{epoch_metrics[epoch]} has no {missing[0]!r} (stage B of the unsupervised "
                "mode writes it: train.labels: refined)"
            )
    rows = [
        {"epoch": epoch, **{key: float(row[key]) for key in columns}}
        for epoch, row in metrics.items()
    ]
    return pd.DataFrame(rows)
