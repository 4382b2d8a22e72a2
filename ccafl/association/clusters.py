"""Camera-aware label refinement (CALR; Li et al., arXiv 2403.16450): the clustering side.

Where labels are absent (only camera ids), CALR makes two kinds of pseudo-labels every epoch
and trusts their agreement:

1. **Local clusters** (:func:`cluster_within_cameras`): each camera's images on their own,
   k-reciprocal Jaccard distance, average-linkage agglomerative clustering into
   ``N_c // images_per_cluster`` clusters (CALR's official code: 5 images per cluster, no
   outliers). Within one camera there is no viewpoint or lighting change to get wrong, so these
   clusters are the more precise ones.
2. **Global clusters** (:func:`global_clusters`): all images, a cosine kNN graph (k = 15,
   edges with similarity >= 0.5), Infomap modules; modules of at most ``drop_size_le`` = 4
   images are outliers (label -1).
3. **Pivot refinement** (:func:`refine_by_pivots`): in each global cluster a pivot (a densely
   linked member, :func:`select_pivots`) vouches for its camera: the cluster's other members
   from the pivot's camera that are not in the pivot's local cluster are dropped (-1) for this
   epoch. Members from other cameras are kept.
4. **Camera-entropy weights** (:func:`camera_entropy_weights`): ``w_k = ln(1 + H_k)`` with
   ``H_k`` the entropy of cluster k's camera distribution, so single-camera clusters (which
   teach nothing about crossing cameras) weigh 0.

Parameters default to CALR's official code (see ``shared/reference/calr-spec.md`` section 2);
where that code deviates from what its paper describes, the functions take the described
behaviour by default and offer the code's as an option (:func:`select_pivots`).
No function here reads a person id; ``ccafl.association.quality`` scores results against one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ccafl.reranking import jaccard_distance

__all__ = [
    "KnnGraph",
    "camera_entropy_weights",
    "cluster_within_cameras",
    "global_clusters",
    "infomap_modules",
    "knn_graph",
    "refine_by_pivots",
    "select_pivots",
]

PIVOT_RULES = ("densest", "last_above_mean")


def cluster_within_cameras(
    features: np.ndarray,
    cameras: np.ndarray,
    *,
    images_per_cluster: int = 5,
    k1: int = 30,
    k2: int = 6,
) -> np.ndarray:
    """Per-camera agglomerative clusters on the Jaccard distance; labels 0-based per camera.

    Every image gets a label (singletons are legal clusters). ``k1``/``k2`` are the Jaccard
    distance's (CALR's person-dataset code: 30 / 6). Raises ``ValueError`` for a camera with
    fewer than ``images_per_cluster`` images: it could not hold one cluster of the rule's size.
    """
    from sklearn.cluster import AgglomerativeClustering

    features = np.asarray(features, dtype=np.float32)
    cameras = np.asarray(cameras)
    if features.ndim != 2 or len(features) != len(cameras):
        raise ValueError(f"features {features.shape} and cameras {cameras.shape} disagree")
    if images_per_cluster < 1:
        raise ValueError(f"images_per_cluster must be >= 1, got {images_per_cluster}")
    labels = np.empty(len(cameras), dtype=np.int64)
    for camera in np.unique(cameras):
        rows = np.flatnonzero(cameras == camera)
        n_clusters = len(rows) // images_per_cluster
        if n_clusters < 1:
            raise ValueError(
                f"camera {camera} has {len(rows)} training images, fewer than one cluster of "
                f"images_per_cluster={images_per_cluster}"
            )
        if n_clusters == 1:
            labels[rows] = 0
            continue
        distance = jaccard_distance(features[rows], k1=k1, k2=k2).astype(np.float64)
        np.fill_diagonal(distance, 0.0)
        distance = np.maximum(distance, distance.T)  # exact symmetry for the linkage
        clusterer = AgglomerativeClustering(
            n_clusters=n_clusters, metric="precomputed", linkage="average"
        )
        labels[rows] = clusterer.fit_predict(distance)
    return labels


@dataclass(frozen=True)
class KnnGraph:
    """Directed kNN links of a feature set and each node's link density (pivot score).

    ``src``/``dst``/``weight`` are the links i -> j (j != i among i's k nearest, similarity
    ``weight = 1 - d_ij >= min_similarity``); ``score[i] = sum over i's links of
    1 / (d_ij + mean d)``, with mean d over the whole n x k distance table, self included.
    """

    n: int
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    score: np.ndarray


def knn_graph(features: np.ndarray, *, k: int = 15, min_similarity: float = 0.5) -> KnnGraph:
    """Cosine kNN graph by an exact faiss inner-product search (k neighbours, self included)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = features / np.maximum(norms, 1e-12)
    n = len(features)
    k = min(k, n)
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(features)
    similarity, neighbours = index.search(features, k)
    distance = 1.0 - similarity.astype(np.float64)
    mean_distance = float(distance.mean())
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    linked = (neighbours != rows) & (neighbours >= 0) & (distance <= 1.0 - min_similarity)
    score = np.where(linked, 1.0 / (distance + mean_distance), 0.0).sum(axis=1)
    return KnnGraph(
        n=n,
        src=rows[linked],
        dst=neighbours[linked].astype(np.int64),
        weight=(1.0 - distance[linked]).astype(np.float64),
        score=score,
    )


def infomap_modules(graph: KnnGraph, *, seed: int = 1) -> np.ndarray:
    """Two-level directed Infomap modules of the linked nodes; unlinked nodes are singletons.

    Returns one label per node, 0..K-1 in order of first appearance (deterministic for a seed).
    """
    import infomap

    labels = np.full(graph.n, -1, dtype=np.int64)
    if len(graph.src):
        finder = infomap.Infomap(f"--two-level --directed --silent --seed {int(seed)}")
        for i, j, w in zip(
            graph.src.tolist(), graph.dst.tolist(), graph.weight.tolist(), strict=True
        ):
            finder.add_link(i, j, w)
        finder.run()
        # The modules are read back from Infomap's .clu file, not through its Python result
        # objects: their SWIG iterators collide with faiss's SWIG module in one process
        # (a segmentation fault when faiss was imported first).
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "modules.clu"
            finder.write_clu(str(path))
            table = np.loadtxt(path, comments="#", ndmin=2)
        if len(table):
            labels[table[:, 0].astype(np.int64)] = table[:, 1].astype(np.int64)
    singles = labels < 0
    labels[singles] = labels.max(initial=0) + 1 + np.arange(singles.sum())
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # label codes by first appearance
    _, codes = np.unique(labels, return_inverse=True)
    return order[codes].astype(np.int64)


def global_clusters(
    features: np.ndarray,
    *,
    k: int = 15,
    min_similarity: float = 0.5,
    drop_size_le: int = 4,
    seed: int = 1,
) -> tuple[np.ndarray, KnnGraph]:
    """CALR's global clustering: Infomap on the kNN graph; clusters of <= drop_size_le -> -1.

    Returns (labels, graph): labels 0..K-1 for kept clusters, -1 for outliers.
    """
    graph = knn_graph(features, k=k, min_similarity=min_similarity)
    modules = infomap_modules(graph, seed=seed)
    sizes = np.bincount(modules)
    kept = sizes > drop_size_le
    new_code = np.full(len(sizes), -1, dtype=np.int64)
    new_code[kept] = np.arange(kept.sum())
    return new_code[modules], graph


def select_pivots(labels: np.ndarray, score: np.ndarray, *, rule: str = "densest") -> np.ndarray:
    """One pivot per cluster (index, or -1 if the cluster has none); -1 labels are outliers.

    A pivot must score above the mean score of all nodes. ``densest`` (default) takes the
    cluster's highest-scoring member, the member most of the cluster links to, which is what
    a pivot is meant to be; ``last_above_mean`` reproduces CALR's official code, which takes
    the member with the highest sample index among those above the mean.
    """
    if rule not in PIVOT_RULES:
        raise ValueError(f"pivot rule must be one of {PIVOT_RULES}, got {rule!r}")
    labels = np.asarray(labels)
    score = np.asarray(score, dtype=np.float64)
    n_clusters = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    pivots = np.full(n_clusters, -1, dtype=np.int64)
    eligible = np.flatnonzero((labels >= 0) & (score > score.mean()))
    if rule == "densest":
        # Ascending score, ties by descending index: each cluster's last entry is its pivot.
        order = eligible[np.lexsort((-eligible, score[eligible]))]
    else:
        order = eligible  # ascending index: the last one above the mean is the pivot
    last_first = order[::-1]
    clusters, first = np.unique(labels[last_first], return_index=True)
    pivots[clusters] = last_first[first]
    return pivots


def refine_by_pivots(
    global_labels: np.ndarray,
    local_labels: np.ndarray,
    cameras: np.ndarray,
    pivots: np.ndarray,
    *,
    decay: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Drop (-1) a global cluster's members from its pivot's camera outside the pivot's local cluster.

    ``local_labels`` are per camera (:func:`cluster_within_cameras`). Each such member is dropped
    with probability ``decay`` (CALR's code: 1, deterministic). The pivot itself, members of other
    cameras and clusters without a pivot are untouched. Returns a new array.
    """
    global_labels = np.asarray(global_labels)
    local_labels = np.asarray(local_labels)
    cameras = np.asarray(cameras)
    if not (global_labels.shape == local_labels.shape == cameras.shape):
        raise ValueError("global labels, local labels and cameras must have one shape")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    refined = global_labels.copy()
    member = global_labels >= 0
    pivot = np.where(member, pivots[np.maximum(global_labels, 0)], -1)
    has_pivot = pivot >= 0
    safe = np.maximum(pivot, 0)
    outside = has_pivot & (cameras == cameras[safe]) & (local_labels != local_labels[safe])
    if decay < 1.0:
        rng = rng if rng is not None else np.random.default_rng(0)
        outside &= rng.random(len(refined)) < decay
    refined[outside] = -1
    return refined


def camera_entropy_weights(labels: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """``w_k = ln(1 + H_k)``, H_k the entropy (nats) of cluster k's camera shares; -1 ignored.

    Single-camera clusters get 0; two cameras at 50/50 get ln(1 + ln 2) = 0.526.
    """
    labels = np.asarray(labels)
    cameras = np.asarray(cameras)
    kept = labels >= 0
    n_clusters = int(labels.max()) + 1 if kept.any() else 0
    _, camera_codes = np.unique(cameras, return_inverse=True)
    n_cameras = int(camera_codes.max()) + 1 if camera_codes.size else 0
    counts = np.zeros((n_clusters, max(n_cameras, 1)), dtype=np.float64)
    np.add.at(counts, (labels[kept], camera_codes[kept]), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1)
    return np.log1p(entropy)
