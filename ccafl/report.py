"""The report stage: plots and tables of a finished run, for `snakemake --report`.

Everything here reads the artifacts the report rule names (:class:`ReportInputs`: the rule
passes every file on the command line; no path is built here, so the DAG stays the one place
that says where an artifact lives) and writes into ``results/<name>/report/``. The set of files
written is fixed (:data:`OUTPUTS`) whatever the run looked like, because Snakemake declares them
as the report rule's outputs: when an optional input is missing (no inter-camera epochs, no
caption-pretrained CLIP, no training truth for the association diagnostics, ...) the plot is
replaced by a small placeholder image that says why, and the table by a one-row note.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot state, no
display needed) and written atomically, like every other artifact.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ccafl.io import atomic_path, write_text

log = logging.getLogger(__name__)

DPI = 110
TABLES = ("metrics.md", "metrics.csv", "timings.csv", "zero_shot.csv")
PLOTS = ("cmc.png", "losses.png", "association.png", "tsne.png", "retrieval.png", "timings.png")
#: Every file :func:`build_report` writes; the report rule declares exactly these.
OUTPUTS = TABLES + PLOTS

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
_CAMERA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# Stage-3 jobs: one per block of epochs, named by the first epoch of the block.
_EPOCH_BENCHMARK = re.compile(r"^inter_epochs_(\d+)$")


class NotAvailable(Exception):
    """An optional input of a plot or table is missing; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Reading artifacts


def _read_json(path: Path) -> dict:
    import json

    if not path.is_file():
        raise NotAvailable(f"{path} not found")
    return json.loads(path.read_text())


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise NotAvailable(f"no {what} ({path} not found)")
    return pd.read_parquet(path)


@dataclass
class ReportInputs:
    """The files a report is drawn from, as the report rule names them; None: not in this run.

    ``training_logs``: log.parquet per stage, keyed "clip" (caption pretraining), "prompt"
    (stage 1), "intra" (stage 2). ``epochs``: epoch -> (log.parquet, metrics.json) of each
    inter-camera epoch. ``attribute_zero_shot``: clip/zero_shot.json of a caption-pretrained
    CLIP. ``references``: name -> reference JSON (`ccafl.reference`), shown beside the trained
    model. ``benchmarks``: job name -> Snakemake benchmark .tsv.
    """

    metrics: Path | None = None
    cmc: Path | None = None
    features: Path | None = None
    dataset_root: Path | None = None
    training_logs: dict[str, Path] = field(default_factory=dict)
    epochs: dict[int, tuple[Path, Path]] = field(default_factory=dict)
    attribute_zero_shot: Path | None = None
    references: dict[str, Path] = field(default_factory=dict)
    benchmarks: dict[str, Path] = field(default_factory=dict)


def _given(path: Path | None, what: str) -> Path:
    if path is None:
        raise NotAvailable(f"no {what} in this run")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Writing figures


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def placeholder_png(path: str | Path, reason: str) -> Path:
    """A small image that says the plot is not available, and why."""
    figure = _new_figure(6.0, 1.6)
    text = textwrap.fill(f"not available: {reason}", width=70)
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="0.25")
    return _save_figure(figure, Path(path))


def _placeholder_csv(path: Path, reason: str) -> Path:
    return write_text(
        pd.DataFrame({"note": [f"not available: {reason}"]}).to_csv(index=False), path
    )


# ---------------------------------------------------------------------------------------------
# Tables


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
    rows = [_metrics_row(_read_json(_given(metrics_file, "evaluation metrics")))]
    for name, path in (references or {}).items():
        try:
            rows.extend(reference_rows(name, _read_json(Path(path))))
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


def zero_shot_table(zero_shot_file: Path | None) -> pd.DataFrame:
    """Per-attribute zero-shot retrieval of the caption-pretrained CLIP (clip/zero_shot.json)."""
    if zero_shot_file is None:
        raise NotAvailable("clip.pretrained is not 'captions', so no CLIP was pretrained here")
    zero_shot = _read_json(Path(zero_shot_file))
    # Imported here: the module pulls in torch and open_clip, which the rest of the report
    # does not need.
    from ccafl.training.zero_shot import attribute_table

    return attribute_table(zero_shot)


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


# ---------------------------------------------------------------------------------------------
# Plots


def plot_cmc(
    cmc_file: Path | None, metrics_file: Path | None, path: Path, max_rank: int = 50
) -> None:
    """CMC curve, ranks 1..max_rank, with rank-1/5/10 marked."""
    cmc = _read_parquet(_given(cmc_file, "CMC table"), "CMC table")
    cmc = cmc[cmc["rank"] <= max_rank].sort_values("rank")
    if cmc.empty:
        raise NotAvailable("the CMC table is empty")
    title = "CMC (Market-1501 protocol)"
    if metrics_file is not None and Path(metrics_file).is_file():
        metrics = _read_json(Path(metrics_file))
        title += f": mAP {100 * metrics['mAP']:.1f}%, mINP {100 * metrics['mINP']:.1f}%"
    figure = _new_figure(6.0, 4.0)
    ax = figure.add_subplot()
    ax.plot(cmc["rank"], 100 * cmc["cmc"], color="tab:blue", lw=1.8)
    for rank in (1, 5, 10):
        hit = cmc[cmc["rank"] == rank]
        if not hit.empty:
            value = 100 * float(hit["cmc"].iloc[0])
            ax.plot(rank, value, "o", color="tab:blue")
            ax.annotate(
                f"R{rank} {value:.1f}",
                (rank, value),
                xytext=(6, -12),
                fontsize=8,
                textcoords="offset points",
            )
    ax.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 101))
    ax.set_xlim(1, max(int(cmc["rank"].max()), 2))
    ax.grid(alpha=0.3)
    _save_figure(figure, path)


def _epoch_axis(log_table: pd.DataFrame) -> np.ndarray:
    """Fractional epoch of every logged step: epoch e's steps spread over (e-1, e]."""
    position = log_table.groupby("epoch").cumcount().to_numpy() + 1
    per_epoch = log_table.groupby("epoch")["epoch"].transform("size").to_numpy()
    return log_table["epoch"].to_numpy() - 1 + position / per_epoch


def _loss_panel(ax, log_table: pd.DataFrame, title: str) -> None:
    x = _epoch_axis(log_table)
    columns = [c for c in log_table.columns if c.startswith("loss")]
    steps_per_epoch = max(1, len(log_table) // max(1, log_table["epoch"].nunique()))
    window = max(1, steps_per_epoch // 2) if len(log_table) > 60 else 1
    for i, column in enumerate(columns):
        values = log_table[column].astype(float)
        total = column == "loss"
        color = "black" if total else f"C{i}"
        label = "total" if total else column.removeprefix("loss_")
        if window > 1:  # long logs: the raw steps faint, a running mean on top
            ax.plot(x, values, color=color, lw=0.6, alpha=0.25)
            values = values.rolling(window, min_periods=1).mean()
        ax.plot(x, values, color=color, lw=1.8 if total else 1.2, label=label)
    ax.set(title=title, xlabel="epoch", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def _inter_log(epochs: dict[int, tuple[Path, Path]]) -> pd.DataFrame:
    tables = [
        pd.read_parquet(log_file)
        for _, (log_file, _) in sorted(epochs.items())
        if Path(log_file).is_file()
    ]
    if not tables:
        raise NotAvailable("no inter-camera epochs (train.epochs == train.intra_epochs)")
    return pd.concat(tables, ignore_index=True).sort_values(["epoch", "step"], kind="stable")


STAGE_TITLES = {
    "clip": "CLIP pretraining on captions",
    "prompt": "stage 1: prompt learning",
    "intra": "stage 2: intra-camera",
}


def plot_losses(
    training_logs: dict[str, Path], epochs: dict[int, tuple[Path, Path]], path: Path
) -> None:
    """One panel per training stage, each loss term a line over (fractional) epochs."""

    def stage_log(name: str) -> Callable[[], pd.DataFrame]:
        return lambda: _read_parquet(Path(training_logs[name]), f"{name} log")

    stages: list[tuple[str, Callable[[], pd.DataFrame]]] = [
        (title, stage_log(name)) for name, title in STAGE_TITLES.items() if name in training_logs
    ]
    stages.append(("stage 3: inter-camera", lambda: _inter_log(epochs)))
    panels = []
    for title, load in stages:
        try:
            panels.append((title, load()))
        except NotAvailable as why:
            log.info("losses: %s panel skipped: %s", title, why)
    if not panels:
        raise NotAvailable("no training log found")
    n_cols = 2 if len(panels) > 1 else 1
    n_rows = math.ceil(len(panels) / n_cols)
    figure = _new_figure(6.0 * n_cols, 3.6 * n_rows + 0.3)
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.axis("off")
    for ax, (title, table) in zip(axes, panels, strict=False):
        _loss_panel(ax, table, title)
        if "loss_ical" in table and table["loss_ical"].notna().any():
            adv = int(table.loc[table["loss_ical"].notna(), "epoch"].min())
            ax.axvline(adv - 1, color="tab:red", ls="--", lw=1)
            ax.text(
                adv - 1,
                0.97,
                f" E_adv={adv}",
                color="tab:red",
                fontsize=8,
                va="top",
                transform=ax.get_xaxis_transform(),
            )
    figure.suptitle("Training losses (steps within an epoch spread evenly over it)")
    _save_figure(figure, path)


def association_table(epochs: dict[int, tuple[Path, Path]]) -> pd.DataFrame:
    rows = []
    for epoch, (_, metrics_file) in sorted(epochs.items()):
        if Path(metrics_file).is_file():
            rows.append({**_read_json(Path(metrics_file)), "epoch": epoch})
    if not rows:
        raise NotAvailable("no inter-camera epochs (train.epochs == train.intra_epochs)")
    return pd.DataFrame(rows).sort_values("epoch")


def plot_association(epochs: dict[int, tuple[Path, Path]], path: Path) -> None:
    """Pairwise precision/recall/F-score and expansion of the association (paper Fig. 12)."""
    table = association_table(epochs)
    figure = _new_figure(11.0, 4.0)
    quality_ax, cluster_ax = figure.subplots(1, 2)
    if "assoc_precision" in table and table["assoc_precision"].notna().any():
        for column, label, color in [
            ("assoc_precision", "precision", "tab:blue"),
            ("assoc_recall", "recall", "tab:orange"),
            ("assoc_f_score", "F-score", "tab:green"),
        ]:
            quality_ax.plot(table["epoch"], table[column], "o-", ms=3, color=color, label=label)
        quality_ax.set(ylim=(0, 1.02), xlabel="epoch", ylabel="pairwise score")
        expansion_ax = quality_ax.twinx()
        expansion_ax.plot(table["epoch"], table["assoc_expansion"], "s--", ms=3, color="tab:purple")
        expansion_ax.axhline(1.0, color="tab:purple", lw=0.6, alpha=0.4)
        expansion_ax.set_ylabel("expansion (clusters / true identities)", color="tab:purple")
        handles = quality_ax.get_legend_handles_labels()[0]
        handles.append(Line2D([], [], color="tab:purple", ls="--", marker="s", ms=3))
        quality_ax.legend(
            handles, ["precision", "recall", "F-score", "expansion"], fontsize=8, loc="lower right"
        )
        quality_ax.set_title("Association quality (pairs of ICS ids of one person)")
        quality_ax.grid(alpha=0.3)
    else:
        log.info("association: no training truth, quality panel left empty")
        quality_ax.axis("off")
        quality_ax.text(
            0.5,
            0.5,
            "association quality not available:\nno training truth table",
            ha="center",
            va="center",
            color="0.3",
        )
    cluster_ax.plot(table["epoch"], table["n_clusters"], "o-", ms=3, label="pseudo-labels")
    if "assoc_n_identities" in table:
        cluster_ax.axhline(
            float(table["assoc_n_identities"].iloc[-1]),
            color="tab:green",
            ls="--",
            lw=1,
            label="true identities",
        )
    if "n_gids" in table:
        cluster_ax.axhline(
            float(table["n_gids"].iloc[-1]),
            color="0.5",
            ls=":",
            lw=1,
            label="ICS ids (no association)",
        )
    cluster_ax.set(
        xlabel="epoch", ylabel="count", title="Clusters after association", ylim=(0, None)
    )
    cluster_ax.grid(alpha=0.3)
    cluster_ax.legend(fontsize=8)
    _save_figure(figure, path)


def _test_features(features_file: Path | None) -> pd.DataFrame:
    features = _read_parquet(_given(features_file, "test features"), "test features")
    if features.empty:
        raise NotAvailable("the test feature table is empty")
    return features


def _feature_matrix(table: pd.DataFrame) -> np.ndarray:
    matrix = np.stack(table["feature"].to_numpy()).astype(np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def plot_tsne(
    features_file: Path | None, path: Path, n_identities: int = 20, seed: int = 0
) -> None:
    """t-SNE of query+gallery features of ~20 identities: colour identity, marker camera."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = _test_features(features_file)
    people = features[features["pid"] > 0]
    # Identities seen by several cameras show whether features are camera-agnostic.
    cameras = people.groupby("pid")["camera"].nunique()
    candidates = cameras[cameras >= 2].index.to_numpy()
    if len(candidates) < 2:
        candidates = cameras.index.to_numpy()
    if len(candidates) == 0:
        raise NotAvailable("no identified test images (pid > 0)")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, min(n_identities, len(candidates)), replace=False))
    subset = people[people["pid"].isin(chosen)].reset_index(drop=True)
    if len(subset) < 5:
        raise NotAvailable(f"only {len(subset)} test images of the chosen identities")
    perplexity = float(min(30.0, max(2.0, (len(subset) - 1) / 3)))
    # One thread: a few hundred points take ~1 s, while Barnes-Hut's OpenMP threads slow
    # down many times over on a busy machine (30 s on 2 shared cores).
    with threadpool_limits(limits=1):
        embedding = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
        ).fit_transform(_feature_matrix(subset))

    figure = _new_figure(7.5, 6.0)
    ax = figure.add_subplot()
    palette = colormaps["tab20"]
    colors = {pid: palette(i % 20) for i, pid in enumerate(chosen)}
    camera_ids = sorted(subset["camera"].unique())
    markers = {c: _CAMERA_MARKERS[i % len(_CAMERA_MARKERS)] for i, c in enumerate(camera_ids)}
    for (pid, camera), rows in subset.groupby(["pid", "camera"]):
        ax.scatter(
            embedding[rows.index, 0],
            embedding[rows.index, 1],
            s=26,
            c=[colors[pid]],
            marker=markers[camera],
            edgecolors="black",
            linewidths=0.3,
        )
    handles = [
        Line2D([], [], ls="", marker=markers[c], color="0.4", label=f"camera {c + 1}")
        for c in camera_ids
    ]
    ax.legend(handles=handles, fontsize=8, title="marker", loc="best")
    ax.set(xticks=[], yticks=[])
    ax.set_title(
        f"t-SNE of test features: {len(chosen)} identities, {len(subset)} images "
        "(colour = identity)"
    )
    _save_figure(figure, path)


def _load_thumbnail(root: Path, relative: str) -> np.ndarray:
    from PIL import Image

    with Image.open(root / relative) as image:
        return np.asarray(image.convert("RGB"))


def retrieval_ranking(
    query: pd.DataFrame, gallery: pd.DataFrame, top_k: int = 10
) -> list[tuple[int, np.ndarray]]:
    """Top-k valid gallery rows per query row by cosine similarity (Market-1501 protocol).

    Excluded for a query: gallery images of its pid taken by its camera, and junk (pid -1).
    """
    g_feats = _feature_matrix(gallery)
    g_pids, g_cams = gallery["pid"].to_numpy(), gallery["camera"].to_numpy()
    out = []
    for i, row in enumerate(query.itertuples(index=False)):
        similarity = g_feats @ _feature_matrix(query.iloc[[i]])[0]
        invalid = ((g_pids == row.pid) & (g_cams == row.camera)) | (g_pids == -1)
        similarity[invalid] = -np.inf
        order = np.argsort(-similarity, kind="stable")[:top_k]
        out.append((i, order[np.isfinite(similarity[order])]))
    return out


def plot_retrieval(
    features_file: Path | None,
    dataset_root: str | Path | None,
    path: Path,
    n_queries: int = 6,
    top_k: int = 10,
    seed: int = 0,
) -> None:
    """Query (left) and its top-k gallery images; green border = same person, red = wrong."""
    features = _test_features(features_file)
    root = _given(dataset_root, "dataset root")
    gallery = features[features["split"] == "gallery"].reset_index(drop=True)
    query = features[(features["split"] == "query") & (features["pid"] > 0)]
    # Only queries that have a true match left after the protocol's exclusions.
    valid = [
        i
        for i, row in query.iterrows()
        if ((gallery["pid"] == row.pid) & (gallery["camera"] != row.camera)).any()
    ]
    if not valid or gallery.empty:
        raise NotAvailable("no query with a true match in the gallery")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(valid, min(n_queries, len(valid)), replace=False))
    query = query.loc[picked].reset_index(drop=True)
    if not (root / query["path"].iloc[0]).is_file():
        raise NotAvailable(f"dataset images not found under {root} (e.g. {query['path'].iloc[0]})")

    rankings = retrieval_ranking(query, gallery, top_k)
    figure = _new_figure(1.0 * (top_k + 1) + 0.4, 1.75 * len(query) + 0.4)
    axes = figure.subplots(len(query), top_k + 1, squeeze=False)
    for (i, order), row_axes in zip(rankings, axes, strict=True):
        q = query.iloc[i]
        _show(
            row_axes[0],
            _load_thumbnail(root, q["path"]),
            "tab:blue",
            f"query\npid {q['pid']} c{q['camera'] + 1}",
        )
        for rank, ax in enumerate(row_axes[1:], start=1):
            if rank > len(order):
                ax.axis("off")
                continue
            g = gallery.iloc[order[rank - 1]]
            correct = g["pid"] == q["pid"]
            _show(
                ax,
                _load_thumbnail(root, g["path"]),
                "tab:green" if correct else "tab:red",
                f"#{rank} c{g['camera'] + 1}",
            )
    figure.suptitle(
        f"Retrieval examples: top-{top_k} by cosine similarity "
        "(same pid + same camera and junk excluded); green = correct, red = wrong"
    )
    _save_figure(figure, path)


def _show(ax, image: np.ndarray, color: str, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
    ax.set_title(title, fontsize=7)


def plot_timings(summary: pd.DataFrame, path: Path, adv_start: int | None = None) -> None:
    """Wall time per rule (inter epochs summed) and per inter-camera epoch."""
    per_rule = summary[summary["level"] == "rule"]
    epochs = summary[summary["level"] == "epoch"]
    n_panels = 2 if len(epochs) else 1
    figure = _new_figure(5.5 * n_panels, 0.35 * len(per_rule) + 1.8)
    axes = figure.subplots(1, n_panels, squeeze=False)[0]
    labels = [
        f"{r.rule} (x{r.jobs})" if r.jobs > 1 else r.rule for r in per_rule.itertuples(index=False)
    ]
    ax = axes[0]
    ax.barh(labels, per_rule["seconds"], color="tab:blue")
    ax.invert_yaxis()
    for y, seconds in enumerate(per_rule["seconds"]):
        ax.text(seconds, y, f" {seconds:.0f} s", va="center", fontsize=7)
    ax.set(xlabel="wall time (s)", title="Per rule (Snakemake benchmark files)")
    ax.set_xlim(0, 1.2 * max(float(per_rule["seconds"].max()), 1e-9))
    ax.grid(axis="x", alpha=0.3)
    if len(epochs):
        ax = axes[1]
        adv = adv_start if adv_start is not None else math.inf
        colors = ["tab:red" if e >= adv else "tab:orange" for e in epochs["epoch"]]
        ax.bar(epochs["epoch"].astype(int), epochs["seconds"], color=colors)
        ax.set(xlabel="epoch", ylabel="wall time (s)", title="Per inter-camera epoch job")
        if adv_start is not None:
            ax.legend(
                handles=[
                    Line2D([], [], ls="", marker="s", color="tab:orange", label="before E_adv"),
                    Line2D([], [], ls="", marker="s", color="tab:red", label="with ICAL"),
                ],
                fontsize=8,
            )
        ax.grid(axis="y", alpha=0.3)
    _save_figure(figure, path)


def ical_start(epochs: dict[int, tuple[Path, Path]]) -> int | None:
    """The first inter epoch whose log has L_ICAL (E_adv as it happened), or None."""
    for epoch, (log_file, _) in sorted(epochs.items()):
        if Path(log_file).is_file():
            table = pd.read_parquet(log_file)
            if "loss_ical" in table and table["loss_ical"].notna().any():
                return epoch
    return None


def write_timings(
    benchmarks: dict[str, Path], out_dir: str | Path, adv_start: int | None = None
) -> pd.DataFrame:
    summary = timings_summary(benchmark_table(benchmarks))
    out_dir = Path(out_dir)
    write_text(summary.to_csv(index=False, float_format="%.3f"), out_dir / "timings.csv")
    plot_timings(summary, out_dir / "timings.png", adv_start)
    return summary


# ---------------------------------------------------------------------------------------------
# Everything


def build_report(inputs: ReportInputs, out_dir: str | Path) -> dict:
    """Write every file of :data:`OUTPUTS` into ``out_dir`` from the files ``inputs`` names.

    A plot or table whose inputs are missing is replaced by a placeholder saying why; the
    returned dict maps each output to its path (``outputs``) and each replaced one to the
    reason (``skipped``).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}

    def attempt(names: tuple[str, ...], make: Callable[[], object]) -> None:
        try:
            make()
        except NotAvailable as why:
            log.info("%s not available: %s", ", ".join(names), why)
            for name in names:
                skipped[name] = str(why)
                if name.endswith(".png"):
                    placeholder_png(out_dir / name, str(why))
                elif name.endswith(".csv"):
                    _placeholder_csv(out_dir / name, str(why))
                else:
                    write_text(f"not available: {why}\n", out_dir / name)

    def zero_shot() -> None:
        table = zero_shot_table(inputs.attribute_zero_shot)
        write_text(table.to_csv(index=False, float_format="%.4f"), out_dir / "zero_shot.csv")

    attempt(
        ("metrics.md", "metrics.csv"),
        lambda: write_metrics(inputs.metrics, out_dir, inputs.references),
    )
    attempt(("cmc.png",), lambda: plot_cmc(inputs.cmc, inputs.metrics, out_dir / "cmc.png"))
    attempt(
        ("losses.png",),
        lambda: plot_losses(inputs.training_logs, inputs.epochs, out_dir / "losses.png"),
    )
    attempt(
        ("association.png",), lambda: plot_association(inputs.epochs, out_dir / "association.png")
    )
    attempt(("tsne.png",), lambda: plot_tsne(inputs.features, out_dir / "tsne.png"))
    attempt(
        ("retrieval.png",),
        lambda: plot_retrieval(inputs.features, inputs.dataset_root, out_dir / "retrieval.png"),
    )
    attempt(
        ("timings.csv", "timings.png"),
        lambda: write_timings(inputs.benchmarks, out_dir, ical_start(inputs.epochs)),
    )
    attempt(("zero_shot.csv",), zero_shot)
    return {
        "outputs": {name: str(out_dir / name) for name in OUTPUTS},
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
