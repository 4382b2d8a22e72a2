"""A searchable gallery: a faiss index over L2-normalised features plus its row table.

Kinds (inner product of unit vectors = cosine similarity, so scores read the same everywhere):

* ``flat`` (``IndexFlatIP``): exact. The default up to :data:`EXACT_UP_TO` rows.
* ``ivf`` (``IndexIVFFlat``, spherical k-means): approximate; scans ``nprobe`` of ``nlist``
  lists per query. The default beyond :data:`EXACT_UP_TO` rows. Stores the full vectors, so a
  candidate's score is exact and only *which* candidates are seen is approximate.
* ``hnsw`` (``IndexHNSWFlat``): approximate graph search; fast queries, slow to build on few
  cores (no GPU version in faiss).

Why the threshold sits at 100,000 rows: an exact query costs one pass over the gallery. On the
development machine (2 cores, loaded; benchmarks/bench_search.py) a flat query over 100k x
1024-d took 19 ms, interactive enough; at 1M rows it took 0.47 s, while the IVF index answered
in 30 ms with recall@10 0.998 against the exact top 10 (figures in the README).

GPU: when faiss is a GPU build and sees a GPU, flat and IVF indexes are searched (and IVF is
trained) on all GPUs (``faiss.index_cpu_to_all_gpus``); the saved index is always the CPU one.
This path is guarded and has not been run here (no GPU on the development machine).

On disk (a folder): ``index.faiss``, ``rows.parquet`` (``path``, ``camera`` [, ``pid``], one
row per index id) and ``index.json`` (kind, parameters, model digest, feature name, images
root), written last, so a folder with an ``index.json`` is complete.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ccafl.association import faiss_has_gpu
from ccafl.data.datasets import DatasetError
from ccafl.io import atomic_path, write_json, write_parquet

__all__ = [
    "EXACT_UP_TO",
    "INDEX_KINDS",
    "GalleryIndex",
    "build_index",
    "choose_kind",
    "default_nlist",
    "default_nprobe",
]

#: Rows up to which ``kind="auto"`` builds an exact flat index (see the module docstring).
EXACT_UP_TO = 100_000
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
#: faiss GPU indexes return at most this many neighbours per query.
_GPU_MAX_K = 2048

Allowed = Callable[[int, np.ndarray], np.ndarray]


def choose_kind(n_rows: int, kind: str = "auto", exact_up_to: int = EXACT_UP_TO) -> str:
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if n_rows <= exact_up_to else "ivf"


def default_nlist(n_rows: int) -> int:
    """About sqrt(n) lists, and at least 39 training points per list (faiss's own minimum)."""
    return max(1, min(round(math.sqrt(n_rows)), n_rows // 39))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query: 1/16 of them, at least 8 (or all, for tiny indexes)."""
    return min(nlist, max(8, nlist // 16))


def _to_search_device(index: faiss.Index, use_gpu: bool | None) -> tuple[faiss.Index, bool]:
    """The index to search with: a copy on all GPUs when faiss has them (untested here)."""
    if use_gpu is False or (use_gpu is None and not faiss_has_gpu()):
        return index, False
    if not faiss_has_gpu():
        raise RuntimeError("--gpu on, but this faiss build has no GPU support or sees no GPU")
    if isinstance(index, faiss.IndexHNSW):  # faiss has no GPU HNSW: search it on the CPU
        return index, False
    return faiss.index_cpu_to_all_gpus(index), True


def build_index(
    features: np.ndarray,
    kind: str = "auto",
    *,
    exact_up_to: int = EXACT_UP_TO,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 128,
    use_gpu: bool | None = None,
    seed: int = 0,
) -> tuple[faiss.Index, dict]:
    """A CPU faiss index over ``features`` (n x d, L2-normalised float32) and its parameters."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got {features.shape}")
    n, dim = features.shape
    kind = choose_kind(n, kind, exact_up_to)
    params: dict = {"kind": kind, "n_rows": n, "dim": dim}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(features)
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be in [1, {n}] for {n} rows, got {nlist}")
        nprobe = min(nlist, nprobe or default_nprobe(nlist))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # centroids of unit vectors, compared by inner product
        index.cp.seed = seed
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
        trainer, on_gpu = _to_search_device(index, use_gpu)
        trainer.train(features[np.sort(sample)])
        index = faiss.index_gpu_to_cpu(trainer) if on_gpu else index
        index.add(features)
        index.nprobe = nprobe
        params.update(nlist=nlist, nprobe=nprobe)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search
        index.add(features)
        params.update(hnsw_m=hnsw_m, ef_search=ef_search)
    return index, params


@dataclass
class GalleryIndex:
    """A faiss index, its rows (``path``, ``camera`` [, ``pid``]) and its description."""

    index: faiss.Index
    rows: pd.DataFrame
    info: dict = field(default_factory=dict)
    use_gpu: bool | None = False

    def __post_init__(self) -> None:
        if self.index.ntotal != len(self.rows):
            raise ValueError(f"index holds {self.index.ntotal} vectors, rows {len(self.rows)}")
        self._searcher, self.on_gpu = _to_search_device(self.index, self.use_gpu)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_path(folder / "index.faiss") as tmp:
            faiss.write_index(self.index, str(tmp))
        write_parquet(self.rows.reset_index(drop=True), folder / "rows.parquet")
        write_json({**self.info, "saved_at": time.time()}, folder / "index.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path, use_gpu: bool | None = None) -> GalleryIndex:
        folder = Path(folder)
        info_path = folder / "index.json"
        if not info_path.is_file():
            raise DatasetError(
                f"no search index in {folder} (index.json missing): build one with `ccafl index`"
            )
        info = json.loads(info_path.read_text())
        index = faiss.read_index(str(folder / "index.faiss"))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = int(info.get("nprobe", index.nprobe))
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = int(info.get("ef_search", index.hnsw.efSearch))
        return cls(index, pd.read_parquet(folder / "rows.parquet"), info, use_gpu)

    # ------------------------------------------------------------------ queries

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of rows ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if isinstance(self.index, faiss.IndexIVF) and not self.index.direct_map.type:
            self.index.make_direct_map()
        return self.index.reconstruct_batch(ids)

    def search(
        self, queries: np.ndarray, k: int, allowed: Allowed | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, row ids) per query, best first; ``-1`` ids pad short rows.

        ``allowed(query_row, ids) -> bool mask`` drops rows (other cameras only, the
        evaluation protocol): the search is repeated at twice the depth until every query has
        ``k`` allowed rows or the whole index has been seen.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(self)
        k = max(1, min(int(k), n))
        max_depth = min(n, _GPU_MAX_K) if self.on_gpu else n
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        depth = min(max_depth, k if allowed is None else 2 * k)
        while len(todo):
            found_scores, found_ids = self._searcher.search(queries[todo], depth)
            unfinished = []
            for row, query in enumerate(todo):
                keep = found_ids[row] >= 0
                if allowed is not None:
                    keep[keep] = allowed(int(query), found_ids[row][keep])
                hits = np.flatnonzero(keep)[:k]
                if len(hits) < k and depth < max_depth:
                    unfinished.append(query)
                    continue
                scores[query, : len(hits)] = found_scores[row, hits]
                ids[query, : len(hits)] = found_ids[row, hits]
            todo = np.asarray(unfinished, dtype=np.int64)
            depth = min(max_depth, 2 * depth)
        return scores, ids
