"""One epoch's association of the training set: pseudo-labels per gid and per image, and the
artifact tables of the epoch (graph.parquet, labels.parquet).

Two label sources: CCAFL's association of gids (Eq. 12, :class:`Association`) and CALR's
refined image clusters (``train.labels: refined``, :class:`ImageClusters`).

Plain arrays in: the gid and camera of every training image (train.parquet's columns), never a
person id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccafl.association.clusters import (
    camera_entropy_weights,
    global_clusters,
    refine_by_pivots,
    select_pivots,
)
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
    search: str = "exact",
    domains: np.ndarray | None = None,
) -> Association:
    """Eq. 12 on the gid centroids of the current features (``gids``, ``cameras``: per image).

    ``camera_centering``: associate the camera-centred centroids (:func:`center_per_camera`)
    instead of the raw ones; False is the paper's association. ``search``: the nearest-neighbour
    search of :func:`associate` (exact, approximate or auto). ``domains`` (per image, the DG
    mode's source datasets): associate within each domain only, because pooled datasets share
    no person, so an edge between two of them is always a false merge.
    """
    centroids = class_mean_features(features, torch.as_tensor(gids), n_gids).numpy()
    camera_of_gid = np.zeros(n_gids, dtype=np.int64)
    camera_of_gid[gids] = cameras
    if camera_centering:
        centroids = center_per_camera(centroids, camera_of_gid)
    if domains is None or len(np.unique(domains)) < 2:
        gid_labels, edges = associate(centroids, camera_of_gid, threshold, search=search)
    else:
        domain_of_gid = np.zeros(n_gids, dtype=np.int64)
        domain_of_gid[gids] = domains
        gid_labels, edges = associate_within_groups(
            centroids, camera_of_gid, domain_of_gid, threshold, search=search
        )
    gid_labels = np.asarray(gid_labels)
    return Association(gid_labels, edges, gid_labels[gids])


def associate_within_groups(
    centroids: np.ndarray,
    cameras: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    *,
    search: str = "exact",
) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`associate` run on each group of gids alone (``groups``: per gid), as one result:
    labels contiguous and numbered by the smallest gid of each cluster, the groups' edges in
    gid order. No edge joins two groups."""
    n_gids = len(cameras)
    labels = np.empty(n_gids, dtype=np.int64)
    tables, offset = [], 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        local, edges = associate(centroids[members], cameras[members], threshold, search=search)
        labels[members] = np.asarray(local) + offset
        offset += int(np.max(local)) + 1
        edges = edges.copy()
        edges["src_gid"] = members[edges["src_gid"].to_numpy()]
        edges["dst_gid"] = members[edges["dst_gid"].to_numpy()]
        tables.append(edges)
    smallest = np.full(offset, n_gids, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n_gids))
    labels = np.unique(smallest[labels], return_inverse=True)[1].astype(np.int64).ravel()
    edges = pd.concat(tables, ignore_index=True).sort_values(["src_gid", "dst_gid"])
    return labels, edges.reset_index(drop=True)


@dataclass
class ImageClusters:
    """CALR's labels of one epoch: clusters of images, not of gids (``train.labels: refined``).

    ``image_labels``: the refined clusters, -1 for the images this epoch does not train on
    (global outliers and same-camera members the pivot refinement removed); ``weights``: each
    cluster's camera-entropy weight ``ln(1 + H)``. There is no association graph (graph.parquet
    is empty) and no gid-level label, so L_ICAL does not apply.
    """

    image_labels: np.ndarray
    global_labels: np.ndarray
    local_labels: np.ndarray
    weights: np.ndarray
    edges: pd.DataFrame

    @property
    def n_labels(self) -> int:
        return int(self.image_labels.max()) + 1

    @property
    def n_trained(self) -> int:
        return int((self.image_labels >= 0).sum())

    def labels_table(self, train: pd.DataFrame) -> pd.DataFrame:
        """labels.parquet of this source: one row per image (its clusters are of images)."""
        return pd.DataFrame(
            {
                "path": train["path"].to_numpy(),
                "gid": train["gid"].to_numpy(),
                "camera": train["camera"].to_numpy(),
                "cluster": self.image_labels,
                "global_cluster": self.global_labels,
                "local_cluster": self.local_labels,
            }
        )

    def write(self, out_dir: str | Path, train: pd.DataFrame) -> None:
        write_parquet(self.edges, Path(out_dir) / "graph.parquet")
        write_parquet(self.labels_table(train), Path(out_dir) / "labels.parquet")


def refined_clusters(
    features: torch.Tensor,
    cameras: np.ndarray,
    local_labels: np.ndarray,
    *,
    k: int,
    min_similarity: float,
    min_size: int,
    pivot: str = "densest",
    refine: bool = True,
) -> ImageClusters:
    """CALR's stage-B labels: global Infomap clusters of the image features, refined by each
    cluster's pivot against the per-camera labels (``local_labels``: train.parquet's
    intra_id, stage A's clusters in the unsupervised mode)."""
    glob, graph = global_clusters(
        features.numpy(), k=k, min_similarity=min_similarity, drop_size_le=min_size - 1
    )
    refined = glob
    if refine:
        pivots = select_pivots(glob, graph.score, rule=pivot)
        refined = refine_by_pivots(glob, local_labels, cameras, pivots)
    # Clusters emptied by the refinement are dropped; the rest are renumbered 0..Z-1.
    kept = np.unique(refined[refined >= 0])
    code = np.full(int(glob.max()) + 2 if glob.size else 1, -1, dtype=np.int64)
    code[kept] = np.arange(len(kept))
    refined = np.where(refined >= 0, code[np.maximum(refined, 0)], -1)
    return ImageClusters(
        image_labels=refined,
        global_labels=glob,
        local_labels=np.asarray(local_labels, dtype=np.int64),
        weights=camera_entropy_weights(refined, cameras),
        edges=_no_edges(),
    )


def _no_edges() -> pd.DataFrame:
    dtypes = {"distance": "float32"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "int64")) for c in EDGE_COLUMNS})


def given_association(gid_labels: np.ndarray, gids: np.ndarray, n_gids: int) -> Association:
    """Pseudo-labels supplied from outside (the supervised reference run), no graph."""
    gid_labels = np.asarray(gid_labels, dtype=np.int64)
    if len(gid_labels) != n_gids:
        raise ValueError(f"given labels cover {len(gid_labels)} gids, the data has {n_gids}")
    return Association(gid_labels, _no_edges(), gid_labels[gids])


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
