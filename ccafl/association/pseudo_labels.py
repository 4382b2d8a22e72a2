"""One epoch's association of the training set: pseudo-labels per gid and per image, and the
artifact tables of the epoch (graph.parquet, labels.parquet).

Plain arrays in: the gid and camera of every training image (train.parquet's columns), never a
person id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccafl.association.graph import EDGE_COLUMNS, associate, center_per_camera
from ccafl.errors import UserError
from ccafl.io import write_parquet
from ccafl.memory import class_mean_features


@dataclass
class Association:
    gid_labels: np.ndarray  # pseudo-label of each gid
    edges: pd.DataFrame  # graph.parquet
    image_labels: np.ndarray  # pseudo-label of each training image

    @property
    def n_labels(self) -> int:
        return int(self.gid_labels.max()) + 1

    def labels_table(self, train: pd.DataFrame) -> pd.DataFrame:
        """labels.parquet: gid, camera and pseudo-label (cluster) of every gid of ``train``."""
        per_gid = train.drop_duplicates("gid").sort_values("gid")
        return pd.DataFrame(
            {
                "gid": per_gid["gid"].to_numpy(),
                "camera": per_gid["camera"].to_numpy(),
                "cluster": self.gid_labels[per_gid["gid"].to_numpy()],
            }
        )

    def write(self, out_dir: str | Path, train: pd.DataFrame) -> None:
        """The epoch's artifacts: graph.parquet (Eq. 12's edges) and labels.parquet."""
        write_parquet(self.edges, Path(out_dir) / "graph.parquet")
        write_parquet(self.labels_table(train), Path(out_dir) / "labels.parquet")


def associate_identities(
    features: torch.Tensor,
    gids: np.ndarray,
    cameras: np.ndarray,
    n_gids: int,
    threshold: float,
    *,
    camera_centering: bool = False,
) -> Association:
    """Eq. 12 on the gid centroids of the current features (``gids``, ``cameras``: per image).

    ``camera_centering``: associate the camera-centred centroids (:func:`center_per_camera`)
    instead of the raw ones; False is the paper's association.
    """
    centroids = class_mean_features(features, torch.as_tensor(gids), n_gids).numpy()
    camera_of_gid = np.zeros(n_gids, dtype=np.int64)
    camera_of_gid[gids] = cameras
    if camera_centering:
        centroids = center_per_camera(centroids, camera_of_gid)
    gid_labels, edges = associate(centroids, camera_of_gid, threshold)
    gid_labels = np.asarray(gid_labels)
    return Association(gid_labels, edges, gid_labels[gids])


def given_association(gid_labels: np.ndarray, gids: np.ndarray, n_gids: int) -> Association:
    """Pseudo-labels supplied from outside (the supervised reference run), no graph."""
    gid_labels = np.asarray(gid_labels, dtype=np.int64)
    if len(gid_labels) != n_gids:
        raise ValueError(f"given labels cover {len(gid_labels)} gids, the data has {n_gids}")
    dtypes = {"distance": "float32"}
    edges = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "int64")) for c in EDGE_COLUMNS})
    return Association(gid_labels, edges, gid_labels[gids])


def read_given_labels(path: str | Path, n_gids: int) -> np.ndarray:
    """The per-gid label column of a (gid, cluster) table, checked to cover every gid."""
    table = pd.read_parquet(path)
    missing = sorted({"gid", "cluster"} - set(table.columns))
    if missing:
        raise UserError(
            f"{path}: a labels table needs the columns gid and cluster (missing "
            f"{', '.join(missing)}); the supervised_labels rule writes one"
        )
    table = table.sort_values("gid")
    if table["gid"].tolist() != list(range(n_gids)):
        raise UserError(
            f"{path}: expected one row per gid 0..{n_gids - 1}, found {len(table)} rows; it "
            "belongs to another ICS relabelling: delete it and rerun the supervised_labels rule"
        )
    return np.asarray(table["cluster"], dtype=np.int64)
