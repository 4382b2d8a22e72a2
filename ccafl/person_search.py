"""Search people across cameras: rank a gallery index for query features, with exclusions and
optional k-reciprocal re-ranking, into one table (a row per query and rank).

Exclusions (applied after ranking, never changing a score):

* ``other_cameras_only``: drop gallery images from the query's own camera ("show me this
  person in the *other* cameras").
* ``protocol="market1501"``: exactly what the evaluation drops (ccafl.evaluation): gallery
  images of the query's person *and* camera, and junk (pid -1); distractors (pid 0) stay.
  With it, the first rank holding the query's person is the rank that CMC counts, so a search
  run over the query split reproduces the evaluation's CMC (tests/e2e check rank-10).

Re-ranking (``rerank=True``) uses :func:`ccafl.reranking.k_reciprocal_rerank` on the queries and
a candidate set: the union of every query's ``rerank_depth`` nearest gallery rows. With a depth
at least the gallery size that is the whole gallery (the evaluation's re-ranking); deeper
galleries are re-ranked within their candidates, the usual practice for large indexes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccafl.data.datasets import DatasetError
from ccafl.embedding import camera_and_pid_from_name
from ccafl.evaluation import excluded_from_gallery
from ccafl.gallery_index import Allowed, GalleryIndex

__all__ = ["PROTOCOLS", "exclusion", "query_table", "rank_gallery"]

PROTOCOLS = ("none", "market1501")


def query_table(paths: list[str], camera: str | None = None) -> pd.DataFrame:
    """Queries (``path``, ``camera``, ``pid``): camera and person id from the file naming,
    ``camera`` given explicitly for every query otherwise; unknown values are None / -2."""
    rows = []
    for path in paths:
        parsed = camera_and_pid_from_name(path)
        rows.append(
            {
                "path": str(path),
                "camera": camera if camera is not None else (parsed[0] if parsed else None),
                "pid": parsed[1] if parsed else None,
            }
        )
    return pd.DataFrame(rows, columns=["path", "camera", "pid"])


def exclusion(
    gallery: pd.DataFrame,
    queries: pd.DataFrame,
    *,
    other_cameras_only: bool = False,
    protocol: str = "none",
) -> Allowed | None:
    """``allowed(query_row, ids) -> mask`` for :meth:`GalleryIndex.search`, or None."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not other_cameras_only and protocol == "none":
        return None
    missing_camera = queries["camera"].isna()
    if missing_camera.any():
        raise DatasetError(
            f"the camera of query {queries.loc[missing_camera, 'path'].iloc[0]} is unknown: "
            "name it with --query-camera (or use Market/Duke/MSMT file names)"
        )
    g_cams = gallery["camera"].astype(str).to_numpy()
    q_cams = queries["camera"].astype(str).to_numpy()
    if protocol == "market1501":
        if "pid" not in gallery.columns:
            raise DatasetError(
                "--protocol market1501 needs person ids in the index (a pid column: Market/Duke "
                "file names or a manifest with pid)"
            )
        missing_pid = queries["pid"].isna()
        if missing_pid.any():
            raise DatasetError(
                f"--protocol market1501 needs the person id of query "
                f"{queries.loc[missing_pid, 'path'].iloc[0]} (from its Market/Duke file name)"
            )
        g_pids = gallery["pid"].to_numpy(dtype=np.int64)
        q_pids = queries["pid"].to_numpy(dtype=np.int64)

    def allowed(query: int, ids: np.ndarray) -> np.ndarray:
        keep = np.ones(len(ids), dtype=bool)
        same_camera = g_cams[ids] == q_cams[query]
        if other_cameras_only:
            keep &= ~same_camera
        if protocol == "market1501":
            keep &= ~excluded_from_gallery(q_pids[query], q_cams[query], g_pids[ids], g_cams[ids])
        return keep

    return allowed


def _reranked(
    index: GalleryIndex,
    query_features: np.ndarray,
    top_k: int,
    allowed: Allowed | None,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ccafl.reranking import k_reciprocal_rerank

    _, near = index.search(query_features, min(len(index), max(depth, top_k)))
    candidates = np.unique(near[near >= 0])
    distance = np.asarray(k_reciprocal_rerank(query_features, index.vectors(candidates)))
    k = min(top_k, len(candidates))
    ids = np.full((len(query_features), k), -1, dtype=np.int64)
    dists = np.full((len(query_features), k), np.inf, dtype=np.float32)
    for query in range(len(query_features)):
        order = np.argsort(distance[query], kind="stable")
        if allowed is not None:
            order = order[allowed(query, candidates[order])]
        order = order[:k]
        ids[query, : len(order)] = candidates[order]
        dists[query, : len(order)] = distance[query, order]
    return ids, dists, candidates


def rank_gallery(
    index: GalleryIndex,
    query_features: np.ndarray,
    queries: pd.DataFrame,
    *,
    top_k: int = 20,
    other_cameras_only: bool = False,
    protocol: str = "none",
    rerank: bool = False,
    rerank_depth: int = 100,
) -> pd.DataFrame:
    """One row per query and rank: ``query``, ``query_camera`` [, ``query_pid``], ``rank``
    (1-based), ``path``, ``camera`` [, ``pid``, ``match``], ``score`` (cosine similarity)
    [, ``rerank_distance``: the order when re-ranked]."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    query_features = np.ascontiguousarray(query_features, dtype=np.float32)
    allowed = exclusion(
        index.rows, queries, other_cameras_only=other_cameras_only, protocol=protocol
    )
    rerank_distance = None
    if rerank:
        ids, rerank_distance, _ = _reranked(index, query_features, top_k, allowed, rerank_depth)
    else:
        _, ids = index.search(query_features, top_k, allowed)
    valid = ids >= 0
    q_rows, slots = np.nonzero(valid)
    hit_ids = ids[valid]
    # Cosine score of every listed hit, from the stored vectors (exact for every index kind).
    scores = np.einsum("ij,ij->i", query_features[q_rows], index.vectors(hit_ids))
    table = pd.DataFrame(
        {
            "query": queries["path"].to_numpy()[q_rows],
            "query_camera": queries["camera"].to_numpy()[q_rows],
            "rank": slots + 1,
            "path": index.rows["path"].to_numpy()[hit_ids],
            "camera": index.rows["camera"].astype(str).to_numpy()[hit_ids],
            "score": scores.astype(np.float32),
        }
    )
    has_query_pid = queries["pid"].notna().to_numpy()
    if has_query_pid.any():
        table.insert(2, "query_pid", queries["pid"].astype("Int64").to_numpy()[q_rows])
    if "pid" in index.rows.columns:
        table.insert(
            table.columns.get_loc("camera") + 1, "pid", index.rows["pid"].to_numpy()[hit_ids]
        )
        if "query_pid" in table.columns:
            table["match"] = (table["pid"] == table["query_pid"]).fillna(False).astype(bool)
    if rerank_distance is not None:
        table["rerank_distance"] = rerank_distance[valid]
    return table
