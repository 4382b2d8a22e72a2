"""Pairwise quality of pseudo-labels against true person ids: diagnostics only.

Training never calls this; `ccafl.association.diagnostics` does, after an epoch is written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def association_quality(
    labels: np.ndarray,
    truth: np.ndarray,
    *,
    edges: pd.DataFrame | None = None,
) -> dict[str, float | int]:
    """Pairwise precision/recall/F of gid-level pseudo-labels against true person ids.

    Diagnostics only (truth must never reach training). Pairs are counted from the
    contingency table of (label, truth), never enumerated. Degenerate cases follow the
    "nothing claimed, nothing wrong" convention: no predicted pair -> precision 1.0 (no false
    merge was made), no true pair -> recall 1.0 (nothing to find); F is 0.0 when both
    precision and recall are 0. ``expansion`` is the mean number of distinct clusters a true
    identity is split over (1.0 = never split). With ``edges`` (a graph.parquet table) also
    ``edge_precision``: the share of edges joining gids of one true identity (1.0 if none).
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    if labels.shape != truth.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} must be equal 1-D")
    _, label_codes = np.unique(labels, return_inverse=True)
    _, truth_codes = np.unique(truth, return_inverse=True)
    n_labels = int(label_codes.max()) + 1 if labels.size else 0
    n_truth = int(truth_codes.max()) + 1 if truth.size else 0
    cells = label_codes.astype(np.int64) * max(n_truth, 1) + truth_codes
    _, cell_sizes = np.unique(cells, return_counts=True)

    true_positive = _pairs(cell_sizes)
    predicted = _pairs(np.bincount(label_codes, minlength=n_labels))
    actual = _pairs(np.bincount(truth_codes, minlength=n_truth))
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / actual if actual else 1.0
    f_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    quality: dict[str, float | int] = {
        "precision": float(precision),
        "recall": float(recall),
        "f_score": float(f_score),
        "expansion": float(len(cell_sizes) / n_truth) if n_truth else 1.0,
        "n_gids": int(labels.size),
        "n_clusters": n_labels,
        "n_identities": n_truth,
        "true_pairs": actual,
        "predicted_pairs": predicted,
        "correct_pairs": true_positive,
    }
    if edges is not None:
        same = truth[edges["src_gid"].to_numpy()] == truth[edges["dst_gid"].to_numpy()]
        quality["n_edges"] = int(len(edges))
        quality["edge_precision"] = float(same.mean()) if len(edges) else 1.0
    return quality


def bcubed_quality(labels: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """BCubed precision/recall/F and expansion of image-level clusters (CALR Fig. 5).

    ``P = (1/N) sum_{g,k} n_gk^2 / |k|`` and ``R = (1/N) sum_{g,k} n_gk^2 / |g|`` over the
    contingency counts n_gk of true id g in cluster k: every image's share of its cluster that
    is its own person (P) and of its person that is in its cluster (R). ``expansion`` is the
    mean number of clusters a true id is spread over. Diagnostics only.
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    if labels.shape != truth.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} must be equal 1-D")
    n = labels.size
    if n == 0:
        return {"precision": 1.0, "recall": 1.0, "f_score": 1.0, "expansion": 1.0, "n": 0}
    _, label_codes = np.unique(labels, return_inverse=True)
    _, truth_codes = np.unique(truth, return_inverse=True)
    n_truth = int(truth_codes.max()) + 1
    cells, cell_sizes = np.unique(
        label_codes.astype(np.int64) * n_truth + truth_codes, return_counts=True
    )
    cluster_size = np.bincount(label_codes)[cells // n_truth]
    identity_size = np.bincount(truth_codes)[cells % n_truth]
    squared = cell_sizes.astype(np.float64) ** 2
    precision = float((squared / cluster_size).sum() / n)
    recall = float((squared / identity_size).sum() / n)
    f_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f_score": float(f_score),
        "expansion": float(len(cells) / n_truth),
        "n": int(n),
    }


def calr_cluster_quality(
    global_labels: np.ndarray,
    refined_labels: np.ndarray,
    local_labels: np.ndarray,
    cameras: np.ndarray,
    truth: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Pairwise and BCubed quality of one epoch's global, refined and local clusters.

    Sample sets follow CALR's evaluation code: *global* over all images with the outliers (-1)
    as one cluster; *refined* over the images still labelled (!= -1); *local* per camera, then
    averaged with weights N_c / N. Keys: ``{set: {pairwise_precision, ..., bcubed_f_score,
    expansion}}``.
    """
    global_labels, refined_labels, local_labels, cameras, truth = (
        np.asarray(a) for a in (global_labels, refined_labels, local_labels, cameras, truth)
    )
    kept = refined_labels >= 0
    return {
        "global": cluster_quality(global_labels, truth),
        "refined": cluster_quality(refined_labels[kept], truth[kept]),
        "local": per_camera_quality(local_labels, cameras, truth),
    }


def cluster_quality(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise and BCubed precision/recall/F, expansion and the sample count ``n``."""
    pairwise = association_quality(labels, truth)
    bcubed = bcubed_quality(labels, truth)
    row = {f"pairwise_{k}": float(pairwise[k]) for k in ("precision", "recall", "f_score")}
    row |= {f"bcubed_{k}": float(bcubed[k]) for k in ("precision", "recall", "f_score")}
    row["expansion"] = float(bcubed["expansion"])
    row["n"] = float(len(labels))
    return row


def per_camera_quality(labels: np.ndarray, cameras: np.ndarray, truth: np.ndarray) -> dict:
    """:func:`cluster_quality` of per-camera labels, camera by camera, averaged with weights
    N_c / N (``n`` is the total): CALR's *local* curve."""
    labels, cameras, truth = np.asarray(labels), np.asarray(cameras), np.asarray(truth)
    local: dict[str, float] = {}
    for camera in np.unique(cameras):
        rows = cameras == camera
        share = rows.sum() / len(cameras)
        for key, value in cluster_quality(labels[rows], truth[rows]).items():
            local[key] = local.get(key, 0.0) + (value if key == "n" else share * value)
    return local


def _pairs(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())
