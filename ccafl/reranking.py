"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), written from the paper's description.

Why: a gallery image that is a true match tends to have the query among *its* nearest
neighbours as well; encoding each image by its (expanded) k-reciprocal neighbour set and
comparing sets with a Jaccard distance corrects the plain feature distance.

For every image p of the probe + gallery set:

1. ``N(p, k)``: p's k nearest neighbours, p itself included as its own first neighbour.
2. ``R(p, k) = {g in N(p, k) : p in N(g, k)}`` (k-reciprocal neighbours).
3. ``R*(p, k) = R(p, k) + R(q, k/2)`` for every q in ``R(p, k)`` whose half-size set overlaps
   ``R(p, k)`` in at least 2/3 of its members (recovers matches hidden by pose or view).
4. ``V_p[g] = exp(-d(p, g))`` for g in ``R*(p, k1)``, else 0 (a sparse vector over all images).
5. Local query expansion: ``V_p <- mean of V_g over g in N(p, k2)``.
6. ``d_J(p, g) = 1 - sum_j min(V_p[j], V_g[j]) / sum_j max(V_p[j], V_g[j])``.
7. ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g)``.

``d`` is the cosine distance ``1 - cos`` of L2-normalised features, the distance
:func:`ccafl.evaluation.rank_metrics` ranks by, so re-ranked and plain results compare like for
like. The V vectors are kept sparse and neighbours are found chunk by chunk, but the returned
query x gallery matrix (and the Jaccard accumulator) is dense: meant for Market-1501 /
DukeMTMC-size sets (~3k x 17k), not for MSMT17's 11,659 x 82,161.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["k_reciprocal_rerank"]

_ROW_CHUNK = 1024
_PAIR_CHUNK = 1 << 16


def _normalised(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def _nearest_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """(n x k) indices of each row's k nearest rows by cosine, itself first, chunk by chunk."""
    n = len(features)
    all_features = torch.from_numpy(features)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        similarity = all_features[start:stop] @ all_features.T
        rows = torch.arange(stop - start)
        similarity[rows, rows + start] = torch.inf  # itself first, even among duplicates
        out[start:stop] = torch.topk(similarity, k, dim=1).indices.numpy()
    return out


def _reciprocal_mask(neighbours: np.ndarray) -> np.ndarray:
    """mask[p, i]: p is also among the k nearest of its i-th nearest neighbour."""
    back = neighbours[neighbours]  # (n, k, k)
    return (back == np.arange(len(neighbours))[:, None, None]).any(axis=2)


def _expanded_sets(neighbours: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) pairs of R*(p, k1) over all images, unique and sorted by row then col."""
    n = len(neighbours)
    k_half = max(1, int(round(k1 / 2)))
    full = neighbours[:, :k1]
    half = neighbours[:, :k_half]
    full_ids = np.where(_reciprocal_mask(full), full, -1)
    half_ids = np.where(_reciprocal_mask(half), half, -2)  # -2 never equals a -1 pad
    half_size = (half_ids >= 0).sum(axis=1)
    own_rows, own_slots = np.nonzero(full_ids >= 0)
    keys = [own_rows * n + full_ids[own_rows, own_slots]]
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        members = full_ids[start:stop]  # R(p, k1), -1 padded
        candidates = np.maximum(members, 0)
        their_sets = half_ids[candidates]  # R(q, k1/2) for q in R(p, k1): (rows, k1, k_half)
        overlap = (their_sets[..., None] == members[:, None, None, :]).any(axis=3).sum(axis=2)
        accept = (members >= 0) & (3 * overlap >= 2 * half_size[candidates])
        added = np.where(accept[..., None], their_sets, -1)
        rows = np.broadcast_to(np.arange(start, stop)[:, None, None], added.shape)
        keep = added >= 0
        keys.append(rows[keep] * n + added[keep])
    unique = np.unique(np.concatenate(keys))
    return unique // n, unique % n


def _cosine_distance_pairs(features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _PAIR_CHUNK):
        sl = slice(start, start + _PAIR_CHUNK)
        out[sl] = 1.0 - np.einsum("ij,ij->i", features[rows[sl]], features[cols[sl]])
    return out


def _segment_gather(pointers: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the listed CSR segments, and which listed segment each belongs to."""
    lengths = pointers[segments + 1] - pointers[segments]
    owner = np.repeat(np.arange(len(segments)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(pointers[segments], lengths) + offsets, owner


def _local_query_expansion(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, neighbours: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V_p <- mean of V_g over p's k2 nearest (itself included); sparse in, sparse out."""
    k2 = neighbours.shape[1]
    pointers = np.searchsorted(rows, np.arange(n + 1))
    positions, owner = _segment_gather(pointers, neighbours.ravel())
    new_rows = owner // k2
    keys, inverse = np.unique(new_rows * n + cols[positions], return_inverse=True)
    summed = np.bincount(inverse, weights=values[positions], minlength=len(keys)) / k2
    return keys // n, keys % n, summed


def _jaccard_distance(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_query: int, n: int
) -> np.ndarray:
    """1 - sum min / sum max between each query's V and each gallery image's V (dense Q x G)."""
    n_gallery = n - n_query
    is_gallery = rows >= n_query
    g_rows, g_cols, g_values = rows[is_gallery] - n_query, cols[is_gallery], values[is_gallery]
    by_col = np.argsort(g_cols, kind="stable")
    g_rows, g_cols, g_values = g_rows[by_col], g_cols[by_col], g_values[by_col]
    col_pointers = np.searchsorted(g_cols, np.arange(n + 1))
    row_mass = np.bincount(rows, weights=values, minlength=n)
    q_mass, g_mass = row_mass[:n_query], row_mass[n_query:]

    q_pointers = np.searchsorted(rows, np.arange(n_query + 1))
    out = np.empty((n_query, n_gallery), dtype=np.float32)
    step = max(1, _PAIR_CHUNK * 64 // max(1, n_gallery))
    for start in range(0, n_query, step):
        stop = min(start + step, n_query)
        entries = np.arange(q_pointers[start], q_pointers[stop])
        # Join each query entry (p, j, a) with every gallery entry (g, j, b) of column j.
        positions, owner = _segment_gather(col_pointers, cols[entries])
        query_entry = entries[owner]
        shared = np.minimum(values[query_entry], g_values[positions])
        flat = (rows[query_entry] - start) * n_gallery + g_rows[positions]
        min_sum = np.bincount(flat, weights=shared, minlength=(stop - start) * n_gallery)
        min_sum = min_sum.reshape(stop - start, n_gallery)
        max_sum = q_mass[start:stop, None] + g_mass[None, :] - min_sum
        out[start:stop] = 1.0 - min_sum / max_sum
    return out


def k_reciprocal_rerank(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query x gallery distance ``(1 - lambda) d_J + lambda d`` (float32, dense).

    ``d`` is the cosine distance of the L2-normalised features; with ``lambda_value=1`` the
    result is exactly ``d``. Defaults are the paper's (k1=20, k2=6, lambda=0.3). Dense output:
    for Market-1501/DukeMTMC-size sets (see module docstring).
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got {k1}, {k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    query, gallery = _normalised(q_feats), _normalised(g_feats)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError("query and gallery features must have the same width")
    n_query = len(query)
    features = np.concatenate([query, gallery])
    n = len(features)
    k1, k2 = min(k1, n), min(k2, n)

    neighbours = _nearest_neighbours(features, max(k1, k2))
    rows, cols = _expanded_sets(neighbours, k1)
    values = np.exp(-_cosine_distance_pairs(features, rows, cols)).astype(np.float64)
    if k2 > 1:
        rows, cols, values = _local_query_expansion(rows, cols, values, neighbours[:, :k2], n)
    jaccard = _jaccard_distance(rows, cols, values, n_query, n)

    original = 1.0 - query @ gallery.T
    return ((1.0 - lambda_value) * jaccard + lambda_value * original).astype(np.float32)
