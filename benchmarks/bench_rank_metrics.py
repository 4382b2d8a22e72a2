"""Benchmark: streaming ``rank_metrics`` vs the classic full-matrix evaluation, MSMT17 scale.

Data: random float32 features with ReID-like structure: identity centre + camera bias + noise,
each identity seen by a few of the cameras, a few images per identity and camera. Default
size is MSMT17's test split: 11,659 queries, 82,161 gallery images, 3,060 identities, 15
cameras, 2,048-d (RN50) features.

Ours: ``ccafl.evaluation.rank_metrics(query_features=..., gallery_features=...)``, which streams
query chunks against the gallery and ranks only what the metrics need.

Baseline, measured in the same run: the classic approach found in ReID codebases: full numpy
cosine distance matrix, ``np.argsort`` of every row, a match matrix, then a numpy loop over
queries. Its matrices for all of MSMT17 (11,659 x 82,161 x (4 + 8 + 1) bytes = 12.5 GB) do not
fit comfortably, so it runs on the first ``--baseline-queries`` queries against the full
gallery and its per-query time is extrapolated linearly to all queries (the one-off gallery
normalisation is timed separately and not scaled). It runs in two halves, one before and one
after ours, so that other processes' load weighs on both sides alike; wall and CPU seconds
(all threads, from getrusage) are both reported, with the load average.

Peak memory: the kernel's resident-set high-water mark (VmHWM), reset just before each measured
call through ``/proc/self/clear_refs``; it sees torch and numpy allocations alike. Where that is
not available, a thread samples the RSS every 2 ms (psutil). The figure is for the whole
process, so it includes the input features already in memory; the increase over the RSS at the
start of the call is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from ccafl.evaluation import default_chunk_size, rank_metrics

GIB = 2**30


class PeakMemory:
    """Peak RSS of this process during a ``with`` block (kernel high-water mark or sampling)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.method = "VmHWM reset via /proc/self/clear_refs"
        self.peak = self.start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self.start = self.process.memory_info().rss
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "psutil RSS sampled every 2 ms"
            self.peak = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak = int(line.split()[1]) * 1024


def synthesize(
    n_query: int, n_gallery: int, dim: int, n_ids: int, n_cams: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Identity centre + camera bias + noise; each identity visits 2-6 cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32) / np.sqrt(dim)
    cam_bias = 0.5 * rng.standard_normal((n_cams, dim), dtype=np.float32) / np.sqrt(dim)
    visited = np.stack([rng.permutation(n_cams) for _ in range(n_ids)])
    n_visited = rng.integers(2, min(6, n_cams) + 1, n_ids)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pids = rng.integers(0, n_ids, n)
        cams = visited[pids, (rng.random(n) * n_visited[pids]).astype(np.int64)]
        feats = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 8192):  # in blocks: no second full-size temporary
            sl = slice(start, start + 8192)
            block = rng.standard_normal((len(pids[sl]), dim), dtype=np.float32)
            block *= noise / np.sqrt(dim)
            block += centres[pids[sl]]
            block += cam_bias[cams[sl]]
            feats[sl] = block
        return feats, pids + 1, cams  # pids from 1: 0 is the distractor label

    q_feats, q_pids, q_cams = draw(n_query)
    g_feats, g_pids, g_cams = draw(n_gallery)
    labels = {"q_pids": q_pids, "g_pids": g_pids, "q_cams": q_cams, "g_cams": g_cams}
    return q_feats, g_feats, labels


def classic_rank_metrics(
    q_feats: np.ndarray, g_norm: np.ndarray, labels: dict[str, np.ndarray], max_rank: int
) -> dict:
    """The classic way: full distance matrix, argsort every row, loop over queries."""
    q_pids, g_pids = labels["q_pids"], labels["g_pids"]
    q_cams, g_cams = labels["q_cams"], labels["g_cams"]
    q_norm = q_feats / np.linalg.norm(q_feats, axis=1, keepdims=True)
    distmat = 1.0 - q_norm @ g_norm.T
    indices = np.argsort(distmat, axis=1)
    matches = g_pids[indices] == q_pids[:, None]
    aps, inps, cmcs = [], [], []
    for i in range(len(q_pids)):
        order = indices[i]
        removed = ((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])) | (
            g_pids[order] == -1
        )
        hits = matches[i][~removed]
        if not hits.any():
            continue
        hit_ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[hit_ranks[0] - 1 :] = 1.0
        cmcs.append(cmc)
    return {"ap": aps, "inp": inps, "cmc": cmcs}  # per query, summarised by the caller


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[], dict]) -> tuple[dict, float, float, PeakMemory]:
    """Result, wall seconds, CPU seconds (all threads; less sensitive to other load), memory."""
    with PeakMemory() as memory:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        result = fn()
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return result, elapsed, cpu, memory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=11_659, help="query images (MSMT17)")
    parser.add_argument("--gallery", type=int, default=82_161, help="gallery images (MSMT17)")
    parser.add_argument("--dim", type=int, default=2048, help="feature width (RN50: 2048)")
    parser.add_argument("--ids", type=int, default=3060, help="test identities (MSMT17)")
    parser.add_argument("--cameras", type=int, default=15, help="cameras (MSMT17)")
    parser.add_argument(
        "--baseline-queries",
        type=int,
        default=1000,
        help="queries the classic baseline runs on; its time is extrapolated to --queries",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help="noise norm / centre norm (default 3.1, --quick 1.9: mAP around 0.6)",
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--device", default=None, help="torch device; default CUDA if present")
    parser.add_argument("--max-rank", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="small size that runs in seconds (smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.gallery, args.dim, args.ids = 800, 6000, 256, 220
        args.baseline_queries = min(args.baseline_queries, 200)
    if args.noise is None:
        args.noise = 1.9 if args.quick else 3.1
    n_base = min(args.baseline_queries, args.queries)

    start = time.perf_counter()
    q_feats, g_feats, labels = synthesize(
        args.queries, args.gallery, args.dim, args.ids, args.cameras, args.noise, args.seed
    )
    print(
        f"data: {args.queries:,} queries x {args.gallery:,} gallery, {args.dim}-d float32, "
        f"{args.ids:,} identities, {args.cameras} cameras "
        f"({(q_feats.nbytes + g_feats.nbytes) / GIB:.2f} GiB of features, "
        f"generated in {time.perf_counter() - start:.1f} s)"
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    chunk = args.chunk_size or default_chunk_size(args.gallery)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, chunk: {chunk} queries")

    # Warm-up (first-call costs of torch kernels): 50 queries, each its own match elsewhere.
    pids, cams = labels["q_pids"][:50], labels["q_cams"][:50]
    rank_metrics(
        query_features=q_feats[:50],
        gallery_features=q_feats[:50],
        q_pids=pids,
        g_pids=pids,
        q_cams=cams,
        g_cams=cams + 1,
        device=device,
    )

    # The baseline runs in two halves, one before and one after ours, so that a change in the
    # load from other processes during the run weighs on both sides alike.
    def classic_on(lo: int, hi: int) -> tuple[dict, float, float, PeakMemory, float, float]:
        """Also returns the wall and CPU seconds of the gallery normalisation (a one-off)."""
        part = {
            "q_pids": labels["q_pids"][lo:hi],
            "q_cams": labels["q_cams"][lo:hi],
            "g_pids": labels["g_pids"],
            "g_cams": labels["g_cams"],
        }
        start, start_cpu = time.perf_counter(), cpu_seconds()
        g_norm = g_feats / np.linalg.norm(g_feats, axis=1, keepdims=True)  # freed on return
        normalise = time.perf_counter() - start, cpu_seconds() - start_cpu
        result = measure(lambda: classic_rank_metrics(q_feats[lo:hi], g_norm, part, args.max_rank))
        return *result, *normalise

    load_start = os.getloadavg()[0]
    half = n_base // 2
    classic_a, time_a, cpu_a, mem_a, normalise_time, normalise_cpu = classic_on(0, half)

    ours, ours_time, ours_cpu, ours_mem = measure(
        lambda: rank_metrics(
            query_features=q_feats,
            gallery_features=g_feats,
            **labels,
            max_rank=args.max_rank,
            chunk_size=chunk,
            device=device,
        )
    )
    classic_b, time_b, cpu_b, mem_b, _, _ = classic_on(half, n_base)
    load_end = os.getloadavg()[0]

    print(
        f"\nours (streaming rank_metrics, all {args.queries:,} queries): {ours_time:.2f} s "
        f"({ours_cpu:.1f} CPU s), peak RSS {ours_mem.peak / GIB:.2f} GiB "
        f"(+{(ours_mem.peak - ours_mem.start) / GIB:.2f} GiB over the start of the call)"
    )
    print(
        f"  mAP {ours['mAP']:.4f}  mINP {ours['mINP']:.4f}  rank-1 {ours['cmc'][0]:.4f}  "
        f"valid queries {ours['n_valid_queries']:,}, skipped {ours['n_skipped_queries']:,}"
    )

    classic_time, classic_cpu = time_a + time_b, cpu_a + cpu_b
    classic_peak = max(mem_a.peak, mem_b.peak)
    classic_rise = max(mem_a.peak - mem_a.start, mem_b.peak - mem_b.start)
    scale = args.queries / n_base
    extrapolated = normalise_time + classic_time * scale
    extrapolated_cpu = normalise_cpu + classic_cpu * scale
    print(
        f"\nbaseline (full numpy distance matrix + argsort per row + per-query loop) on the "
        f"first {n_base:,} queries vs the full gallery, in two halves ({time_a:.2f} s before "
        f"ours, {time_b:.2f} s after): {classic_time:.2f} s ({classic_cpu:.1f} CPU s) "
        f"+ {normalise_time:.2f} s gallery normalisation, peak RSS {classic_peak / GIB:.2f} GiB "
        f"(+{classic_rise / GIB:.2f})"
    )
    print(
        f"  extrapolated linearly in queries to all {args.queries:,}: {extrapolated:.1f} s "
        f"({extrapolated_cpu:.1f} CPU s); its matrices would need "
        f"~{args.queries * args.gallery * 13 / GIB:.1f} GiB"
    )
    classic_map = float(np.mean(classic_a["ap"] + classic_b["ap"]))
    classic_rank1 = float(np.mean([cmc[0] for cmc in classic_a["cmc"] + classic_b["cmc"]]))
    subset = rank_metrics(
        query_features=q_feats[:n_base],
        gallery_features=g_feats,
        q_pids=labels["q_pids"][:n_base],
        q_cams=labels["q_cams"][:n_base],
        g_pids=labels["g_pids"],
        g_cams=labels["g_cams"],
        device=device,
    )
    print(
        f"  check on the subset: mAP classic {classic_map:.6f} vs ours {subset['mAP']:.6f}, "
        f"rank-1 {classic_rank1:.4f} vs {subset['cmc'][0]:.4f}"
    )

    print(f"\nmemory measured as: {ours_mem.method}")
    print(
        f"1-min load average {load_start:.2f} at the start, {load_end:.2f} at the end "
        f"(2 cores; other processes slow both sides)"
    )
    print(
        f"speed-up (extrapolated baseline / ours): {extrapolated / ours_time:.1f}x wall time, "
        f"{extrapolated_cpu / ours_cpu:.1f}x CPU time; peak RSS ours {ours_mem.peak / GIB:.2f} GiB"
    )


if __name__ == "__main__":
    main()
