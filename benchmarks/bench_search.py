"""Benchmark: gallery search latency, memory and recall at 10k, 100k and 1M rows, 1024-d.

Baseline, measured in the same run: the exact flat inner-product index (``kind="flat"``, what
``ccafl index`` builds up to ``EXACT_UP_TO`` rows). Against it: the approximate index that
``kind="auto"`` builds beyond that size (IVF, ``ccafl.gallery_index``), with its default
``nlist``/``nprobe``; printed: its latency, the speed-up over flat, its build time and its
recall@10 against the flat index's exact top 10.

Data: synthetic unit vectors with ReID-like structure: "looks" (groups of similar people), a
person centre near its look, and 16 views per person on average around the centre (views of
one person have cosine ~0.7, look-alikes ~0.4, strangers ~0). Queries are new views of random
gallery people, i.e. somebody the gallery holds. Isotropic random vectors, which have no
neighbours worth the name, are the worst case for any approximate index and are not used.

Latency: one query per call (the interactive case), median over ``--latency-queries`` calls,
on one faiss thread; throughput: all ``--queries`` queries in one call, on all threads. Memory: the process's resident-set growth
while the index is built (faiss allocates outside Python), and the index's own size.

The 1M case holds 4 GiB of vectors plus a 4 GiB index: run it niced, once:
``nice -n 19 python benchmarks/bench_search.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import faiss
import numpy as np
import pandas as pd
import psutil

from ccafl.gallery_index import GalleryIndex, build_index

GIB = 2**30


def synthetic_gallery(n: int, dim: int, seed: int = 0, per_person: int = 16) -> np.ndarray:
    """(n x dim) float32 unit vectors with looks > people > views structure, made in chunks."""
    rng = np.random.default_rng(seed)
    n_people = max(1, n // per_person)
    n_looks = max(1, n_people // 50)
    looks = rng.standard_normal((n_looks, dim), dtype=np.float32)
    people = np.empty((n_people, dim), dtype=np.float32)
    for start in range(0, n_people, 65536):
        stop = min(start + 65536, n_people)
        people[start:stop] = looks[rng.integers(0, n_looks, stop - start)]
        people[start:stop] += 1.2 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        out[start:stop] = people[rng.integers(0, n_people, stop - start)]
        out[start:stop] += 1.2 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def new_views(gallery: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    views = gallery[rng.integers(0, len(gallery), n)].copy()
    views += 0.03 * rng.standard_normal(views.shape, dtype=np.float32)
    return views / np.linalg.norm(views, axis=1, keepdims=True)


def timed_build(features: np.ndarray, kind: str) -> tuple[GalleryIndex, dict, float, float]:
    process = psutil.Process()
    gc.collect()
    rss = process.memory_info().rss
    start = time.perf_counter()
    index, params = build_index(features, kind)
    seconds = time.perf_counter() - start
    grown = (process.memory_info().rss - rss) / GIB
    rows = np.zeros(len(features), dtype=np.int8)  # the row table is not what is measured
    return GalleryIndex(index, pd.DataFrame({"r": rows}), params), params, seconds, grown


def latency_ms(index: GalleryIndex, queries: np.ndarray, k: int = 10) -> float:
    """Median single-query time on one thread: a lone query gains nothing from a second
    OpenMP thread, and on a loaded machine waiting for it costs 10x (measured)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    try:
        for row in queries:
            start = time.perf_counter()
            index.search(row[None], k)
            times.append(time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
    return 1000 * float(np.median(times))


def throughput(index: GalleryIndex, queries: np.ndarray, k: int = 10) -> float:
    start = time.perf_counter()
    index.search(queries, k)
    return len(queries) / (time.perf_counter() - start)


def run(n: int, dim: int, n_queries: int, n_latency: int) -> None:
    start = time.perf_counter()
    gallery = synthetic_gallery(n, dim)
    queries = new_views(gallery, n_queries)
    print(f"\n== {n:,} rows x {dim}-d ({gallery.nbytes / GIB:.2f} GiB of vectors, made in "
          f"{time.perf_counter() - start:.1f} s); load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    flat, _, build_s, grown = timed_build(gallery, "flat")
    flat_ms = latency_ms(flat, queries[:n_latency])
    flat_qps = throughput(flat, queries)
    _, truth = flat.search(queries, 10)
    size = flat.index.ntotal * flat.index.d * 4 / GIB
    print(f"flat (baseline): build {build_s:.1f} s, RSS +{grown:.2f} GiB (index {size:.2f} GiB); "
          f"1 query {flat_ms:.2f} ms; {flat_qps:.0f} queries/s in a batch of {n_queries}")  # fmt: skip
    del flat
    gc.collect()

    approx, params, build_s, grown = timed_build(gallery, "ivf")
    ivf_ms = latency_ms(approx, queries[:n_latency])
    ivf_qps = throughput(approx, queries)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    print(f"ivf (nlist {params['nlist']}, nprobe {params['nprobe']}): build {build_s:.1f} s, "
          f"RSS +{grown:.2f} GiB; 1 query {ivf_ms:.2f} ms; {ivf_qps:.0f} queries/s")  # fmt: skip
    print(f"  ratio vs flat: {flat_ms / ivf_ms:.1f}x faster per query, "
          f"{ivf_qps / flat_qps:.1f}x batch throughput; recall@10 {recall:.3f}")  # fmt: skip
    del approx, gallery
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200, help="for throughput and recall")
    parser.add_argument("--latency-queries", type=int, default=30, help="single-query calls")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs; {faiss.omp_get_max_threads()} faiss threads for batches, 1 for single queries"
    )
    for n in args.sizes:
        run(n, args.dim, args.queries, args.latency_queries)


if __name__ == "__main__":
    main()
