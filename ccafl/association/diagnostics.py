"""Diagnostics that read the cross-camera person id: association quality per epoch.

This is the only module besides evaluation that opens ``train_truth.parquet``. Training code
never imports it; the inter-epoch command hands `EpochDiagnostics` to stage 3, which calls it
after an epoch's association and checkpoint are written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ccafl import distributed
from ccafl.association.quality import association_quality
from ccafl.io import write_json

log = logging.getLogger("ccafl")


def truth_per_gid(train: pd.DataFrame, truth_path: str | Path) -> np.ndarray | None:
    """Person id of each gid, or None when the dataset has no training truth (custom data)."""
    truth = pd.read_parquet(truth_path)
    if (truth["pid"] < 0).all():
        return None
    joined = train[["path", "gid"]].merge(truth, on="path", how="left", validate="one_to_one")
    # An ICS gid is one person; a cluster of the unsupervised mode may mix people: its
    # majority person stands for it (ties: the lowest pid).
    counts = joined.groupby(["gid", "pid"]).size().reset_index(name="n")
    counts = counts.sort_values(["gid", "n", "pid"], ascending=[True, False, True])
    return counts.drop_duplicates("gid")["pid"].to_numpy()


def truth_per_image(table: pd.DataFrame, truth_path: str | Path) -> np.ndarray | None:
    """Person id of each row of ``table`` (by path), or None without training truth."""
    truth = pd.read_parquet(truth_path)
    if (truth["pid"] < 0).all():
        return None
    joined = table[["path"]].merge(truth, on="path", how="left", validate="one_to_one")
    return joined["pid"].to_numpy()


def local_cluster_quality(clusters_path: str | Path, truth_path: str | Path) -> dict:
    """Stage A's local clusters against the true ids, within each camera (CALR Fig. 5's
    *local* curve: per camera, weighted by its share of images); {} without training truth."""
    from ccafl.association.quality import per_camera_quality

    clusters = pd.read_parquet(clusters_path)
    pid = truth_per_image(clusters, truth_path)
    if pid is None:
        return {}
    quality = per_camera_quality(clusters["local_cluster"], clusters["camera"], pid)
    del quality["n"]
    quality["n_images"] = int(len(clusters))
    quality["n_clusters"] = int(clusters.groupby(["camera", "local_cluster"]).ngroups)
    return quality


def image_cluster_diagnostics(table: pd.DataFrame, truth_path: str | Path) -> dict:
    """CALR Fig. 5 for one epoch: pairwise and BCubed quality of the global, refined and local
    clusters (``clusters_<set>_<metric>``), each on its own sample set
    (:func:`ccafl.association.quality.calr_cluster_quality`); ``assoc_*`` are the refined
    set's pairwise figures, so the report's association plot shows them."""
    from ccafl.association.quality import calr_cluster_quality

    pid = truth_per_image(table, truth_path)
    if pid is None:
        return {}
    quality = calr_cluster_quality(
        table["global_cluster"].to_numpy(),
        table["cluster"].to_numpy(),
        table["local_cluster"].to_numpy(),
        table["camera"].to_numpy(),
        pid,
    )
    out = {
        f"clusters_{name}_{key}": value for name, q in quality.items() for key, value in q.items()
    }
    refined = quality["refined"]
    out |= {
        f"assoc_{key}": refined[f"pairwise_{key}"] for key in ("precision", "recall", "f_score")
    }
    out["assoc_expansion"] = refined["expansion"]
    return out


def association_diagnostics(
    labels: pd.DataFrame, edges: pd.DataFrame, train: pd.DataFrame, truth_path: str | Path
) -> dict:
    """Pairwise precision/recall/F and expansion of one epoch's pseudo-labels."""
    truth = truth_per_gid(train, truth_path)
    if truth is None:
        return {}
    cluster = labels.sort_values("gid")["cluster"].to_numpy()
    quality = association_quality(cluster, truth, edges=edges)
    return {f"assoc_{key}": value for key, value in quality.items()}


def supervised_labels(train: pd.DataFrame, truth_path: str | Path) -> pd.DataFrame:
    """Cross-camera labels per gid from the truth table: the supervised reference run's labels.

    One row per gid (``gid``, ``cluster``), cluster = a contiguous index of the person id. This
    is the only way a training job may see cross-camera identity, and only the `supervised`
    reference run asks for it (``train.labels: supervised``); an ICS run never reads it.
    """
    truth = truth_per_gid(train, truth_path)
    if truth is None:
        raise ValueError(f"{truth_path} holds no person ids: no supervised reference possible")
    _, cluster = np.unique(truth, return_inverse=True)
    return pd.DataFrame({"gid": np.arange(len(truth)), "cluster": cluster.astype(np.int64)})


class EpochDiagnostics:
    """Stage 3's ``on_epoch_end``: an epoch's metrics plus its association quality (measured
    after training, from the truth table training never opens), written to its metrics.json."""

    def __init__(self, train: pd.DataFrame, truth_path: str | Path, out_dirs: dict[int, Path]):
        self.train = train
        self.truth_path = truth_path
        self.out_dirs = out_dirs

    def __call__(self, epoch: int, association, metrics: dict) -> None:
        if not distributed.is_main():
            return
        table = association.labels_table(self.train)
        if "global_cluster" in table.columns:  # CALR's image clusters (train.labels: refined)
            metrics.update(image_cluster_diagnostics(table, self.truth_path))
        else:
            metrics.update(
                association_diagnostics(table, association.edges, self.train, self.truth_path)
            )
        write_json(metrics, self.out_dirs[epoch] / "metrics.json")
        if "assoc_precision" in metrics:
            log.info(
                "association: precision %.3f recall %.3f F %.3f expansion %.2f",
                metrics["assoc_precision"],
                metrics["assoc_recall"],
                metrics["assoc_f_score"],
                metrics["assoc_expansion"],
            )
