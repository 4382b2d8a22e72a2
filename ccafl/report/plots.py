"""The report's figures, drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot
state, no display needed) and written atomically, like every other artifact."""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ccafl.evaluation import excluded_from_gallery
from ccafl.io import atomic_path, write_text
from ccafl.report.inputs import NotAvailable, given, read_json, read_parquet
from ccafl.report.tables import (
    CALR_CLUSTER_SETS,
    association_table,
    benchmark_table,
    calr_cluster_table,
    inter_log,
    timings_summary,
)

log = logging.getLogger(__name__)

DPI = 110
_CAMERA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


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


def plot_cmc(
    cmc_file: Path | None, metrics_file: Path | None, path: Path, max_rank: int = 50
) -> None:
    """CMC curve, ranks 1..max_rank, with rank-1/5/10 marked."""
    cmc = read_parquet(given(cmc_file, "CMC table"), "CMC table")
    cmc = cmc[cmc["rank"] <= max_rank].sort_values("rank")
    if cmc.empty:
        raise NotAvailable("the CMC table is empty")
    title = "CMC (Market-1501 protocol)"
    if metrics_file is not None and Path(metrics_file).is_file():
        metrics = read_json(Path(metrics_file))
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
        return lambda: read_parquet(Path(training_logs[name]), f"{name} log")

    stages: list[tuple[str, Callable[[], pd.DataFrame]]] = [
        (title, stage_log(name)) for name, title in STAGE_TITLES.items() if name in training_logs
    ]
    stages.append(("stage 3: inter-camera", lambda: inter_log(epochs)))
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
    features = read_parquet(given(features_file, "test features"), "test features")
    if features.empty:
        raise NotAvailable("the test feature table is empty")
    return features


def _feature_matrix(table: pd.DataFrame, normalise: bool = True) -> np.ndarray:
    matrix = np.stack(table["feature"].to_numpy()).astype(np.float32)
    if not normalise:
        return matrix
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
    query: pd.DataFrame, gallery: pd.DataFrame, top_k: int = 10, distance: str = "cosine"
) -> list[tuple[int, np.ndarray]]:
    """Top-k valid gallery rows per query row by the evaluation's distance (Market-1501
    protocol): cosine similarity, or (``euclidean``) the negated squared Euclidean distance of
    the features as stored, as `eval.distance` ranks them.

    Excluded for a query: gallery images of its pid taken by its camera, and junk (pid -1).
    """
    euclidean = distance == "euclidean"
    g_feats = _feature_matrix(gallery, normalise=not euclidean)
    q_feats = _feature_matrix(query, normalise=not euclidean)
    g_sq = np.square(g_feats).sum(axis=1) if euclidean else None
    g_pids, g_cams = gallery["pid"].to_numpy(), gallery["camera"].to_numpy()
    out = []
    for i, row in enumerate(query.itertuples(index=False)):
        similarity = g_feats @ q_feats[i]
        if euclidean:  # -|q - g|^2 up to the query's own norm, which orders nothing
            similarity = 2 * similarity - g_sq
        invalid = excluded_from_gallery(row.pid, row.camera, g_pids, g_cams)
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
    distance: str = "cosine",
) -> None:
    """Query (left) and its top-k gallery images; green border = same person, red = wrong.
    ``distance``: the evaluation's (metrics.json), so the examples are ranked as scored."""
    features = _test_features(features_file)
    root = given(dataset_root, "dataset root")
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

    rankings = retrieval_ranking(query, gallery, top_k, distance)
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
        f"Retrieval examples: top-{top_k} by "
        f"{'Euclidean distance' if distance == 'euclidean' else 'cosine similarity'} "
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


#: CALR Fig. 5's panels: (title, y label, measures drawn; the first solid, a second dashed).
CALR_PANELS = (
    ("F-score, pairwise", "F-score", ("pairwise_f_score",)),
    ("F-score, BCubed", "F-score", ("bcubed_f_score",)),
    ("precision", "precision", ("pairwise_precision", "bcubed_precision")),
    ("recall", "recall", ("pairwise_recall", "bcubed_recall")),
    ("expansion", "clusters per true identity (1 is ideal)", ("expansion",)),
)
_CALR_COLORS = {"global": "tab:blue", "local": "tab:green", "refined": "tab:red"}
_CALR_SETS = {
    "global": "global: clusters of all training images",
    "local": "local: stage A's per-camera clusters (camera-weighted)",
    "refined": "refined: global clusters after the pivot refinement",
}


def plot_calr_clusters(epoch_metrics: dict[int, Path], path: Path) -> Figure:
    """CALR Fig. 5: per stage-B epoch, the pairwise and BCubed F-score, precision, recall and
    the expansion of the global, local and refined clusters (``calr_cluster_table``)."""
    table = calr_cluster_table(epoch_metrics)
    figure = _new_figure(12.0, 6.4)
    axes = figure.subplots(2, 3).ravel()
    for ax, (title, ylabel, measures) in zip(axes, CALR_PANELS, strict=False):
        for measure, style in zip(measures, ("o-", "s--"), strict=False):
            for name in CALR_CLUSTER_SETS:
                ax.plot(
                    table["epoch"],
                    table[f"clusters_{name}_{measure}"],
                    style,
                    ms=3,
                    color=_CALR_COLORS[name],
                    gid=f"clusters_{name}_{measure}",
                )
        if measures != ("expansion",):
            ax.set_ylim(0, 1.02)
        else:
            ax.axhline(1.0, color="0.5", lw=0.6, alpha=0.5)
            ax.set_ylim(0, None)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # One legend for all panels, in the sixth: colour = cluster set, line = pairwise / BCubed.
    key = axes[-1]
    key.axis("off")
    handles = [
        Line2D([], [], color=_CALR_COLORS[name], marker="o", ms=3, label=_CALR_SETS[name])
        for name in CALR_CLUSTER_SETS
    ]
    handles += [
        Line2D([], [], color="0.3", ls="-", marker="o", ms=3, label="pairwise (precision, recall)"),
        Line2D([], [], color="0.3", ls="--", marker="s", ms=3, label="BCubed (precision, recall)"),
    ]
    key.legend(handles=handles, loc="center", fontsize=8, frameon=False)
    key.text(
        0.5,
        0.02,
        "against the diagnostics-only truth table (training never reads it)",
        ha="center",
        fontsize=8,
        color="0.3",
        transform=key.transAxes,
    )
    figure.suptitle("CALR's cluster quality per stage-B epoch (Fig. 5)")
    _save_figure(figure, Path(path))
    return figure
