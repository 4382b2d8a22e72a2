"""Benchmark: what ``eval.rerank`` costs over the plain evaluation, Market-1501 test size.

Data: random float32 features with identity structure (750 identity centres plus noise of 3x
their scale), by default Market-1501's test split: 3,368 queries, 15,913 gallery images,
2,048-d (RN50).

Ours: ``ccafl.reranking.k_reciprocal_rerank`` (k1 20, k2 6, lambda 0.3) followed by
``rank_metrics`` on the re-ranked matrix, as the evaluate stage runs it with ``eval.rerank``.
Baseline, measured in the same run on the same features: the plain streaming
``rank_metrics(query_features=..., gallery_features=...)``. Wall and CPU seconds (all threads,
getrusage) and the peak RSS of each call are printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

import numpy as np
from bench_rank_metrics import GIB, PeakMemory

from ccafl.evaluation import rank_metrics
from ccafl.reranking import k_reciprocal_rerank


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, call: Callable[[], dict]) -> tuple[float, dict]:
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = call()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(
        f"{name}: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS {memory.peak / GIB:.2f} GiB "
        f"(mAP {100 * result['mAP']:.1f})"
    )
    return cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ids", type=int, default=750)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.ids, args.dim)).astype(np.float32)
    q_pids = rng.integers(0, args.ids, args.queries)
    g_pids = rng.integers(0, args.ids, args.gallery)
    noise = 3.0 * rng.standard_normal((args.queries + args.gallery, args.dim), dtype=np.float32)
    q_feats = centres[q_pids] + noise[: args.queries]
    g_feats = centres[g_pids] + noise[args.queries :]
    labels = {
        "q_pids": q_pids + 1,
        "g_pids": g_pids + 1,
        "q_cams": rng.integers(0, 6, args.queries),
        "g_cams": rng.integers(0, 6, args.gallery),
    }
    print(
        f"{args.queries} queries x {args.gallery} gallery, {args.dim}-d; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    plain, _ = measure(
        "plain rank_metrics (baseline)",
        lambda: rank_metrics(query_features=q_feats, gallery_features=g_feats, **labels),
    )
    ours, _ = measure(
        "k-reciprocal re-ranking + rank_metrics",
        lambda: rank_metrics(k_reciprocal_rerank(q_feats, g_feats), **labels),
    )
    print(f"re-ranking costs {ours / plain:.1f}x the plain evaluation's CPU time")


if __name__ == "__main__":
    main()
