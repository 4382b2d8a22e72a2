"""Cross-camera ID association (paper Eq. 12): mutual per-camera nearest neighbours -> graph.

Every inter-camera epoch turns one centroid per global ICS id (gid) into pseudo-labels:

1. Centroids are L2-normalised, so the threshold T of the paper (1.7 Market-1501, 1.5 Duke and
   MSMT17) is a Euclidean distance in [0, 2]: ``dist = sqrt(2 - 2 cos)``.
2. For every gid and every *other* camera, faiss finds its nearest gid in that camera: one flat
   inner-product index per camera, every gid queried against it with k=1 (N_G x n_cameras
   searches; the N_G x N_G distance matrix is never held, query rows go through in chunks).
3. Edge (i, j) iff the cameras differ, dist < T, and the two are each other's nearest neighbour
   in the other's camera (Eq. 12).
4. Connected components (scipy.sparse.csgraph) are the pseudo-labels, after breaking camera
   conflicts: a person appears at most once per camera, so a component holding two gids of one camera is
   wrong somewhere. While a component has a conflict its longest edge is removed and its
   components recomputed (see :func:`conflict_free_components` for the efficient equivalent).

The exact search costs N_G^2 * D multiply-adds: seconds on a CPU for real ICS sets
(thousands of gids), but ~3.8e13 flops at 100k x 2048, minutes on a 2-core CPU
(benchmarks/bench_association.py). There ``search="approximate"`` (chosen by "auto" from
:data:`APPROXIMATE_FROM` gids on a CPU) runs step 2 in a principal subspace with inverted lists
(:func:`approximate_nearest_per_camera`); steps 3-4 and the distances stay exact. Host memory
stays about the input plus one camera's vectors, never N_G^2.

The cross-camera person id is never used here; `ccafl.association.quality` compares the result
with it for diagnostics only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "APPROXIMATE_FROM",
    "EDGE_COLUMNS",
    "SEARCH_MODES",
    "AssociationGraph",
    "associate",
    "associate_graph",
    "approximate_nearest_per_camera",
    "center_per_camera",
    "conflict_free_components",
    "faiss_has_gpu",
]

logger = logging.getLogger(__name__)

#: Columns of ``inter/epoch_k/graph.parquet`` (DESIGN.md section 4), in this order.
EDGE_COLUMNS = ("src_gid", "dst_gid", "src_camera", "dst_camera", "distance")

#: Values of ``associate(search=...)`` and of the ``train.association_search`` setting.
SEARCH_MODES = ("exact", "approximate", "auto")

#: From this many gids on, ``search="auto"`` takes the approximate path on a CPU: there the
#: exact search takes over a minute on 2 cores, the approximate one seconds
#: (benchmarks/bench_association.py, docs/benchmarks.md). Below it, and wherever faiss has a
#: GPU (exact search at 100k gids in about a second), the exact path runs.
APPROXIMATE_FROM = 50_000

# Query rows per faiss call: bounds the normalised copy of a chunk (16 Mi floats = 64 MiB).
_CHUNK_FLOATS = 1 << 24


@dataclass(frozen=True)
class AssociationGraph:
    """Everything one association step decided, removed edges included.

    ``edges`` holds every mutual-nearest edge under the threshold with the five
    :data:`EDGE_COLUMNS` followed by a boolean ``kept``: False for the edges removed to break
    camera conflicts. ``labels`` are the connected components of the kept edges.
    """

    labels: np.ndarray
    edges: pd.DataFrame
    n_conflicted_components: int

    @property
    def kept_edges(self) -> pd.DataFrame:
        """The graph.parquet table: kept edges, exactly the contract columns."""
        kept = self.edges.loc[self.edges["kept"].to_numpy(), list(EDGE_COLUMNS)]
        return kept.reset_index(drop=True)


def faiss_has_gpu() -> bool:
    """True when the installed faiss is a GPU build and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def associate(
    centroids: np.ndarray,
    cameras: np.ndarray,
    threshold: float,
    *,
    search: str = "exact",
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Pseudo-label per gid and the kept association edges (the graph.parquet table).

    ``centroids`` (N_G, D): one row per gid (gid = row index), L2-normalised here, so
    ``threshold`` is a Euclidean distance between unit vectors in [0, 2] as in the paper.
    ``cameras`` (N_G,): camera of each gid (any ints). ``search``: "exact", "approximate"
    (:func:`approximate_nearest_per_camera`) or "auto" (approximate from
    :data:`APPROXIMATE_FROM` gids on, on a CPU). ``use_gpu`` (exact search only): None uses a
    faiss GPU index when faiss has one, True requires it, False forces the CPU.

    Returns ``labels`` (int64, contiguous 0..Z-1, numbered by the smallest gid of each
    cluster, singletons included) and ``edges`` with exactly :data:`EDGE_COLUMNS`
    (ids int64, distance float32, src_gid < dst_gid, sorted). The edges removed to break
    camera conflicts are in :func:`associate_graph`.
    """
    graph = associate_graph(centroids, cameras, threshold, search=search, use_gpu=use_gpu)
    return graph.labels, graph.kept_edges


def associate_graph(
    centroids: np.ndarray,
    cameras: np.ndarray,
    threshold: float,
    *,
    search: str = "exact",
    use_gpu: bool | None = None,
) -> AssociationGraph:
    """:func:`associate` with the removed edges kept in view (``edges["kept"]``)."""
    if search not in SEARCH_MODES:
        raise ValueError(f"search must be one of {', '.join(SEARCH_MODES)}, got {search!r}")
    vectors, camera_values, camera_codes = _validate(centroids, cameras, threshold)
    n_gids = vectors.shape[0]
    norms = _row_norms(vectors)
    if search == "approximate" or (
        search == "auto" and n_gids >= APPROXIMATE_FROM and not faiss_has_gpu()
    ):
        nearest_gid = approximate_nearest_per_camera(
            vectors, norms, camera_codes, len(camera_values), use_gpu=use_gpu
        )
    else:
        nearest_gid = _nearest_per_camera(vectors, norms, camera_codes, len(camera_values), use_gpu)
    src, dst = _mutual_pairs(nearest_gid, camera_codes)
    distance = _pair_distances(vectors, norms, src, dst)
    # Compare the stored float32 value, so every written edge satisfies distance < T.
    below = distance.astype(np.float64) < threshold
    src, dst, distance = src[below], dst[below], distance[below]
    labels, kept, n_conflicted = _components(n_gids, camera_codes, src, dst, distance)
    edges = pd.DataFrame(
        {
            "src_gid": src,
            "dst_gid": dst,
            "src_camera": camera_values[camera_codes[src]].astype(np.int64),
            "dst_camera": camera_values[camera_codes[dst]].astype(np.int64),
            "distance": distance,
            "kept": kept,
        }
    )
    logger.debug(
        "association: %d gids, %d cameras, %d edges (%d removed), %d clusters, %d conflicted",
        n_gids,
        len(camera_values),
        len(edges),
        int((~kept).sum()),
        int(labels.max()) + 1 if n_gids else 0,
        n_conflicted,
    )
    return AssociationGraph(labels=labels, edges=edges, n_conflicted_components=n_conflicted)


def center_per_camera(centroids: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Unit centroids minus their camera's mean unit centroid, renormalised (float32).

    A camera's lighting, viewpoint and background shift all of its gids' features the same
    way, so raw nearest neighbours across two cameras partly match camera styles. Removing
    each camera's mean (the per-camera normalisation of camera-aware proxy methods, applied
    to centroids) leaves what tells people apart; Eq. 12's mutual-nearest and threshold tests
    then run on these vectors unchanged. A camera with a single gid keeps its raw vector,
    which centring would reduce to zero.
    """
    vectors = np.asarray(centroids, dtype=np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cameras = np.asarray(cameras)
    centred = vectors.copy()
    for camera in np.unique(cameras):
        rows = cameras == camera
        if rows.sum() > 1:
            centred[rows] -= vectors[rows].mean(axis=0)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    centred = np.where(norms > 1e-12, centred / np.maximum(norms, 1e-12), vectors)
    return centred.astype(np.float32)


def conflict_free_components(
    n_gids: int,
    cameras: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    distance: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Components of the graph with no two gids of one camera; returns (labels, kept).

    The rule: while a component holds two gids of one camera, remove its longest edge and
    recompute that component's components. Ties between equal distances are broken by the
    edge key ``(distance, src, dst)``: the largest key goes first. Only components with a
    conflict are touched.

    Done literally this costs one component search per removed edge. Since a component's
    edges go in descending key order, every piece the rule produces is a component of "the
    edges with key <= t" for some t, i.e. a node of the single-linkage tree of that
    component, and the rule stops at the largest conflict-free nodes. So the conflicted
    components are replayed bottom-up instead (Kruskal order, union-find): two clusters merge
    if neither is closed and their camera sets are disjoint; otherwise both are closed (their
    parent in the tree has a conflict). An edge is kept iff it merged two clusters or joined
    a cluster to itself before that cluster closed: exactly the edges the literal rule leaves.
    O(E log E) instead of O(E^2); tests check it against the literal rule.

    ``labels`` are contiguous, numbered by the smallest gid of each cluster.
    """
    codes = np.unique(np.asarray(cameras), return_inverse=True)[1].astype(np.int64).ravel()
    if codes.shape != (n_gids,):
        raise ValueError(f"cameras must be ({n_gids},), got shape {np.shape(cameras)}")
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    distance = np.asarray(distance)
    labels, kept, _ = _components(n_gids, codes, src, dst, distance)
    return labels, kept


def _validate(
    centroids: np.ndarray, cameras: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 C-contiguous view (a copy only when needed) and dense camera codes."""
    vectors = np.ascontiguousarray(centroids, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"centroids must be (N_G, D), got shape {vectors.shape}")
    cameras = np.asarray(cameras)
    if cameras.shape != (vectors.shape[0],):
        raise ValueError(f"cameras must be ({vectors.shape[0]},), got shape {cameras.shape}")
    if cameras.size and not np.issubdtype(cameras.dtype, np.integer):
        raise ValueError(f"cameras must be integers, got {cameras.dtype}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive distance, got {threshold}")
    camera_values, camera_codes = np.unique(cameras, return_inverse=True)
    return vectors, camera_values.astype(np.int64), camera_codes.astype(np.int64).ravel()


def _row_chunk(dim: int) -> int:
    return max(256, _CHUNK_FLOATS // max(dim, 1))


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """L2 norm per row, in chunks so no second N_G x D array is made."""
    norms = np.empty(vectors.shape[0], dtype=np.float32)
    step = _row_chunk(vectors.shape[1])
    for start in range(0, vectors.shape[0], step):
        block = vectors[start : start + step]
        norms[start : start + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
    bad = ~(np.isfinite(norms) & (norms > 0))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} centroid(s) are zero or not finite, e.g. gid {np.argmax(bad)}"
        )
    return norms


def _nearest_per_camera(
    vectors: np.ndarray,
    norms: np.ndarray,
    camera_codes: np.ndarray,
    n_cameras: int,
    use_gpu: bool | None,
) -> np.ndarray:
    """(N_G, n_cameras) nearest gid per camera; -1 for the gid's own camera.

    One camera's index is alive at a time and queries go in row chunks (views where the
    chunk has no gid of that camera), so memory beyond the input is one camera's vectors twice
    plus a chunk, whatever N_G is. Cost: N_G^2 * D multiply-adds, exact.
    """
    n_gids, dim = vectors.shape
    nearest_gid = np.full((n_gids, n_cameras), -1, dtype=np.int64)
    if n_cameras < 2:
        return nearest_gid
    gpu = _gpu_resources(use_gpu)
    step = _row_chunk(dim)
    for camera in range(n_cameras):
        members = np.flatnonzero(camera_codes == camera)
        database = vectors[members] / norms[members, None]
        index = faiss.GpuIndexFlatIP(gpu, dim) if gpu is not None else faiss.IndexFlatIP(dim)
        index.add(database)
        del database
        for start in range(0, n_gids, step):
            stop = min(start + step, n_gids)
            other = camera_codes[start:stop] != camera
            if not other.any():
                continue
            # A query's own norm scales all its scores alike: raw rows give the same argmax.
            if other.all():
                rows, queries = np.arange(start, stop), vectors[start:stop]
            else:
                rows = start + np.flatnonzero(other)
                queries = vectors[rows]
            _, hits = index.search(queries, 1)
            nearest_gid[rows, camera] = members[hits[:, 0]]
        del index
    return nearest_gid


def approximate_nearest_per_camera(
    vectors: np.ndarray,
    norms: np.ndarray,
    camera_codes: np.ndarray,
    n_cameras: int,
    *,
    dims: int = 128,
    probes: int = 4,
    sample: int = 8192,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> np.ndarray:
    """:func:`_nearest_per_camera` by an inverted-file search in a principal subspace.

    The exact search costs N_G^2 * D; this one about N_G^2 * (dims + 1) * probes / sqrt(n)
    for cameras of n gids, so 100k gids x 2048-d take seconds on 2 cores instead of minutes:

    1. The unit centroids, centred, are projected on their ``dims`` leading principal axes
       (randomised SVD of a seeded ``sample`` of rows, two power iterations). Trained ReID
       features concentrate on few axes; what the projection drops of a vector is kept as one
       more coordinate, its residual norm r, on the database side only, so the searched
       distance is ``|P(x - y)|^2 + r_y^2``: exactly ``|x - y|^2`` up to the cross term of the
       two residuals, which is small when the residuals are noise.
    2. Blocked per camera pair, as the exact path: each camera's gids in about sqrt(n)
       seeded k-means lists (:func:`_inverted_file_nearest`), every gid of the other cameras
       searched in the ``probes`` lists nearest to it, k = 1.

    Runs on the CPU; ``use_gpu`` reaches only the exact search it falls back to when ``dims``
    leaves nothing out.

    Deterministic for a fixed input and thread count (seeded sample, projection and k-means),
    so a resumed epoch reproduces its graph. Edge recall against the exact graph is printed by
    the benchmark; nearest neighbours with a clear margin (true matches) are found, ties among
    unrelated gids are where it differs.
    """
    n_gids, dim = vectors.shape
    nearest_gid = np.full((n_gids, n_cameras), -1, dtype=np.int64)
    if n_cameras < 2:
        return nearest_gid
    if dims + 1 >= dim:
        return _nearest_per_camera(vectors, norms, camera_codes, n_cameras, use_gpu)
    projected = _principal_projection(vectors, norms, dims, sample, seed)
    coords = np.ascontiguousarray(projected[:, :dims])
    residual_sq = np.square(projected[:, dims], dtype=np.float32)
    del projected
    # A camera's style shifts all its gids alike: a query from camera a is probed where it
    # would lie in camera c (shifted by c's mean minus a's), while its distances stay its own.
    members_of = [np.flatnonzero(camera_codes == camera) for camera in range(n_cameras)]
    camera_means = np.stack([coords[members].mean(axis=0) for members in members_of])
    for camera, members in enumerate(members_of):
        others = np.flatnonzero(camera_codes != camera)
        queries = coords[others]
        shifted = queries - camera_means[camera_codes[others]] + camera_means[camera]
        hits = _inverted_file_nearest(
            coords[members], residual_sq[members], queries, probes, seed, shifted
        )
        nearest_gid[others, camera] = members[hits]
    return nearest_gid


def _principal_projection(
    vectors: np.ndarray, norms: np.ndarray, dims: int, sample: int, seed: int
) -> np.ndarray:
    """(N_G, dims + 1) float32: centred unit rows on ``dims`` principal axes, then the norm
    of what the axes leave out."""
    n_gids, dim = vectors.shape
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n_gids, min(n_gids, sample), replace=False))
    rows = vectors[picked] / norms[picked, None]
    mean = rows.mean(axis=0)
    rows -= mean
    # Randomised range finder (Halko et al. 2011) with two power iterations, then an exact SVD
    # of the small (dims + 16) x D matrix.
    basis = rows @ rng.standard_normal((dim, dims + 16)).astype(np.float32)
    for _ in range(2):
        basis = np.linalg.qr(basis)[0]
        basis = rows @ (rows.T @ basis)
    basis = np.linalg.qr(basis)[0]
    axes = np.linalg.svd(basis.T @ rows, full_matrices=False)[2][:dims]
    axes = np.ascontiguousarray(axes.T, dtype=np.float32)  # (D, dims)
    del rows, basis
    projected = np.empty((n_gids, dims + 1), dtype=np.float32)
    step = _row_chunk(dim)
    for start in range(0, n_gids, step):
        block = vectors[start : start + step] / norms[start : start + step, None]
        block -= mean
        coords = block @ axes
        projected[start : start + step, :dims] = coords
        residual = np.einsum("ij,ij->i", block, block) - np.einsum("ij,ij->i", coords, coords)
        projected[start : start + step, dims] = np.sqrt(np.maximum(residual, 0.0))
    return projected


def _inverted_file_nearest(
    database: np.ndarray,
    residual_sq: np.ndarray,
    queries: np.ndarray,
    probes: int,
    seed: int,
    probe_queries: np.ndarray | None = None,
) -> np.ndarray:
    """Row of ``database`` nearest to each query, |q - y|^2 + residual_sq[y], searched in the
    ``probes`` k-means lists nearest to the query (an IVF-Flat search), or to its row of
    ``probe_queries`` where given (where to look, not what is compared).

    faiss clusters the rows into about sqrt(n) lists and finds every query's lists; the
    distances inside a list are one matrix product per list (BLAS), several times faster on a
    CPU than faiss's per-query list scan at these sizes. Lists are visited in order and a
    later list wins only with a strictly smaller distance, so the result is deterministic.
    """
    count, width = database.shape
    n_lists = max(1, int(round(np.sqrt(count))))
    kmeans = faiss.Kmeans(width, n_lists, niter=10, seed=seed, min_points_per_centroid=1)
    kmeans.train(database)
    list_of_row = kmeans.index.search(database, 1)[1][:, 0]
    where = queries if probe_queries is None else probe_queries
    probed = kmeans.index.search(np.ascontiguousarray(where), min(probes, n_lists))[1]
    # The query's own |q|^2 is the same for all candidates: left out of the comparison.
    database_sq = np.einsum("ij,ij->i", database, database) + residual_sq
    best = np.full(len(queries), np.inf, dtype=np.float32)
    best_row = np.zeros(len(queries), dtype=np.int64)
    rows_by_list = np.argsort(list_of_row, kind="stable")
    row_bounds = np.searchsorted(list_of_row[rows_by_list], np.arange(n_lists + 1))
    probe_list = probed.ravel()
    probe_order = np.argsort(probe_list, kind="stable")
    queries_by_list = probe_order // probed.shape[1]
    query_bounds = np.searchsorted(probe_list[probe_order], np.arange(n_lists + 1))
    for list_id in range(n_lists):
        rows = rows_by_list[row_bounds[list_id] : row_bounds[list_id + 1]]
        asking = queries_by_list[query_bounds[list_id] : query_bounds[list_id + 1]]
        if not len(rows) or not len(asking):
            continue
        scores = queries[asking] @ database[rows].T
        scores *= -2.0
        scores += database_sq[rows]
        nearest = np.argmin(scores, axis=1)
        value = scores[np.arange(len(asking)), nearest]
        better = value < best[asking]
        best[asking[better]] = value[better]
        best_row[asking[better]] = rows[nearest[better]]
    return best_row


def _gpu_resources(use_gpu: bool | None) -> object | None:
    if use_gpu is False:
        return None
    if not faiss_has_gpu():
        if use_gpu:
            raise RuntimeError("use_gpu=True but this faiss build has no GPU or sees none")
        return None
    return faiss.StandardGpuResources()


def _mutual_pairs(
    nearest_gid: np.ndarray, camera_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs that are each other's nearest in the other's camera; once each, src < dst, sorted."""
    gid, camera = np.nonzero(nearest_gid >= 0)  # row-major: sorted by gid, then camera
    partner = nearest_gid[gid, camera]
    keep = (nearest_gid[partner, camera_codes[gid]] == gid) & (gid < partner)
    src, dst = gid[keep], partner[keep]
    order = np.lexsort((dst, src))
    return src[order], dst[order]


def _pair_distances(
    vectors: np.ndarray, norms: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> np.ndarray:
    """Euclidean distance of unit vectors per pair, from the difference (float64).

    sqrt(2 - 2 cos) from float32 search scores loses ~3 digits for near-duplicates; the
    difference does not, and costs one pass over the pairs only.
    """
    distance = np.empty(len(src), dtype=np.float32)
    step = 128  # pairs per pass: two float64 buffers that stay in cache (2x faster than 2048)
    diff = np.empty((step, vectors.shape[1]))
    other = np.empty_like(diff)
    for start in range(0, len(src), step):
        a, b = src[start : start + step], dst[start : start + step]
        one, two = diff[: len(a)], other[: len(a)]
        np.divide(vectors[a], norms[a, None], out=one, dtype=np.float64)
        np.divide(vectors[b], norms[b, None], out=two, dtype=np.float64)
        one -= two
        distance[start : start + step] = np.sqrt(np.einsum("ij,ij->i", one, one))
    return distance


def _components(
    n_gids: int,
    camera_codes: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    distance: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels, kept, number of conflicted components); see conflict_free_components."""
    smallest = _smallest_member(n_gids, src, dst)  # cluster id = smallest gid in it

    kept = np.ones(len(src), dtype=bool)
    n_cameras = int(camera_codes.max()) + 1 if n_gids else 1
    cells, cell_counts = np.unique(smallest * n_cameras + camera_codes, return_counts=True)
    conflicted = np.unique(cells[cell_counts > 1] // n_cameras)
    if conflicted.size:
        in_conflict = np.isin(smallest[src], conflicted)
        edge_ids = np.flatnonzero(in_conflict)
        roots, kept_in_conflict = _split_conflicts(
            camera_codes, src[edge_ids], dst[edge_ids], distance[edge_ids]
        )
        kept[edge_ids] = kept_in_conflict
        nodes = np.flatnonzero(np.isin(smallest, conflicted))
        smallest[nodes] = roots[nodes]
    labels = np.unique(smallest, return_inverse=True)[1].astype(np.int64).ravel()
    return labels, kept, int(conflicted.size)


def _smallest_member(n_gids: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per node, the smallest node of its connected component (scipy's sparse search: the
    component *sets* fix the result, so it does not depend on the algorithm; 25x faster than
    networkx at 100k gids)."""
    if n_gids == 0:
        return np.zeros(0, dtype=np.int64)
    adjacency = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_gids, n_gids)
    ).tocsr()
    _, component = connected_components(adjacency, directed=False)
    smallest = np.full(int(component.max()) + 1, n_gids, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(n_gids, dtype=np.int64))
    return smallest[component]


def _split_conflicts(
    camera_codes: np.ndarray, src: np.ndarray, dst: np.ndarray, distance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bottom-up replay of "remove the longest edge while conflicted" (union-find).

    Returns the root (smallest gid of its final cluster) of every node, valid for the nodes
    touched by these edges, and the kept flag per edge in input order.
    """
    parent = list(range(len(camera_codes)))
    cameras_of = [1 << int(code) for code in camera_codes.tolist()]  # bit set per root
    closed = bytearray(len(camera_codes))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    kept = np.zeros(len(src), dtype=bool)
    order = np.lexsort((dst, src, distance))  # ascending (distance, src, dst)
    for edge, a, b in zip(order.tolist(), src[order].tolist(), dst[order].tolist(), strict=True):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            kept[edge] = not closed[root_a]
        elif closed[root_a] or closed[root_b] or cameras_of[root_a] & cameras_of[root_b]:
            closed[root_a] = closed[root_b] = 1
        else:
            low, high = min(root_a, root_b), max(root_a, root_b)
            parent[high] = low
            cameras_of[low] |= cameras_of[high]
            kept[edge] = True
    roots = np.fromiter((find(node) for node in range(len(parent))), np.int64, len(parent))
    return roots, kept
