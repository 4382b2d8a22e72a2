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
    per_gid = joined.drop_duplicates("gid").sort_values("gid")
    return per_gid["pid"].to_numpy()


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
        metrics.update(
            association_diagnostics(
                association.labels_table(self.train),
                association.edges,
                self.train,
                self.truth_path,
            )
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
