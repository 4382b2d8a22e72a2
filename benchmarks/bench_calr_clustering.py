"""Time and peak memory of one epoch of CALR's clustering at MSMT17 scale, against dense baselines.

An unsupervised (CALR) epoch clusters the whole training set twice (``ccafl.association.clusters``):

* **global**: a cosine kNN graph (k = 15) by an exact faiss inner-product search, then Infomap.
  Baseline: the same graph from the full N x N similarity matrix (one torch product,
  argpartition per row block), then the same Infomap. Both run at ``--images``.
* **per camera**: each camera's k-reciprocal Jaccard distance (n_c x n_c) and average-linkage
  agglomerative clustering into n_c // 5 clusters. Baseline: one Jaccard distance over all N
  images, each camera's block cut out of it (what clustering "within cameras" costs when the
  distance is computed once for the set). It runs at ``--dense-images`` and is extrapolated
  quadratically (its N x N output is 4 GiB at MSMT17's 32,621).

The data: MSMT17's training split in shape (32,621 images, 1,041 people each seen by 5 of 15
cameras of uneven size, 2,048-d): image = person vector + camera bias + noise, float32. Each measurement runs in
a fresh process so its peak resident memory (ru_maxrss) is its own.

    python benchmarks/bench_calr_clustering.py           # MSMT17 scale (minutes on 2 cores)
    python benchmarks/bench_calr_clustering.py --quick   # seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_association import reset_peak_rss, rss_mib  # noqa: E402

from ccafl.association.clusters import (  # noqa: E402
    KnnGraph,
    cluster_within_cameras,
    global_clusters,
    infomap_modules,
)
from ccafl.association.quality import bcubed_quality  # noqa: E402
from ccafl.reranking import jaccard_distance  # noqa: E402


def make_images(n: int, n_ids: int, n_cameras: int, dim: int, seed: int):
    """(features float32, camera per image, person per image), uneven camera sizes."""
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(n_cameras, 2.0))
    # Each person is seen by 5 cameras (MSMT17: 4,821 ICS ids of 1,041 people, 6.8 images each).
    seen_by = np.stack([rng.choice(n_cameras, size=min(5, n_cameras), replace=False, p=share)
                        for _ in range(n_ids)])  # fmt: skip
    person = rng.integers(0, n_ids, size=n)
    camera = seen_by[person, rng.integers(0, seen_by.shape[1], size=n)]
    scale = np.float32(1 / np.sqrt(dim))
    people = rng.standard_normal((n_ids, dim), dtype=np.float32)
    bias = rng.standard_normal((n_cameras, dim), dtype=np.float32) * np.float32(0.5)
    feats = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 4096):
        block = feats[start : start + 4096]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= np.float32(0.8)
        block += people[person[start : start + 4096]] + bias[camera[start : start + 4096]]
        block *= scale
    return feats, camera, person


def dense_global(feats: np.ndarray, k: int = 15, min_similarity: float = 0.5) -> np.ndarray:
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    # The whole N x N matrix (4 GiB at 32,621), by torch: numpy's bundled OpenBLAS crashes on
    # a product this size.
    import torch

    t = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    similarity = (t @ t.T).numpy()
    n = len(unit)
    nearest = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 2048):  # top-k row block by row block (no N x N index array)
        block = similarity[start : start + 2048]
        nearest[start : start + 2048] = np.argpartition(-block, k - 1, axis=1)[:, :k]
    sims = np.take_along_axis(similarity, nearest, axis=1).astype(np.float64)
    distance = 1.0 - sims
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    linked = (nearest != rows) & (distance <= 1.0 - min_similarity)
    score = np.where(linked, 1.0 / (distance + distance.mean()), 0.0).sum(axis=1)
    graph = KnnGraph(n, rows[linked], nearest[linked], sims[linked], score)
    modules = infomap_modules(graph)
    sizes = np.bincount(modules)
    code = np.full(len(sizes), -1)
    code[sizes > 4] = np.arange((sizes > 4).sum())
    return code[modules]


def dense_local(feats: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    distance = jaccard_distance(feats, k1=30, k2=6)
    labels = np.empty(len(cameras), dtype=np.int64)
    for camera in np.unique(cameras):
        rows = np.flatnonzero(cameras == camera)
        block = distance[np.ix_(rows, rows)].astype(np.float64)
        block = np.maximum(block, block.T)
        np.fill_diagonal(block, 0.0)
        labels[rows] = AgglomerativeClustering(
            n_clusters=max(1, len(rows) // 5), metric="precomputed", linkage="average"
        ).fit_predict(block)
    return labels


def worker(args: argparse.Namespace) -> None:
    feats, cameras, person = make_images(args.size, args.ids, args.cameras, args.dim, args.seed)
    before = rss_mib()
    reset = reset_peak_rss()
    start = time.perf_counter()
    if args.worker == "global-faiss":
        labels, _ = global_clusters(feats)
    elif args.worker == "global-dense":
        labels = dense_global(feats)
    elif args.worker == "local-per-camera":
        labels = cluster_within_cameras(feats, cameras)
    else:
        labels = dense_local(feats, cameras)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.worker.startswith("local"):
        # Scored within cameras: a local cluster is right when it holds one person's images
        # in its own camera.
        labels = labels * args.cameras + cameras
        person = person * args.cameras + cameras
    kept = labels >= 0
    quality = bcubed_quality(labels[kept], person[kept])
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "rss_before_mib": before,
                      "peak_reset": reset, "kept": int(kept.sum()),
                      "n_clusters": int(len(np.unique(labels[kept]))),
                      "bcubed_f": quality["f_score"]}))  # fmt: skip


def measure(args: argparse.Namespace, kind: str, size: int) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--size", str(size), "--ids",
               str(max(2, args.ids * size // args.images)), "--cameras", str(args.cameras),
               "--dim", str(args.dim), "--seed", str(args.seed)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} at {size} images failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(name: str, size: int, r: dict) -> str:
    return (f"{name:<18} {size:>7,} images {r['seconds']:8.2f} s  peak RSS "
            f"{r['peak_rss_mib'] / 1024:6.2f} GiB (input and imports {r['rss_before_mib'] / 1024:.2f})"
            f"  clusters {r['n_clusters']:,}  kept {r['kept']:,}  BCubed F {r['bcubed_f']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32_621)
    parser.add_argument("--ids", type=int, default=1_041)
    parser.add_argument("--cameras", type=int, default=15)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--dense-images", type=int, default=8_000,
                        help="size at which the per-camera baseline runs")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3,000 images, 256-d")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.images, args.ids, args.dim, args.dense_images = 3_000, 100, 256, 3_000
    n, small = args.images, min(args.dense_images, args.images)
    print(f"CALR clustering, one epoch: {n:,} images, {args.ids:,} people, "
          f"{args.cameras} cameras, {args.dim}-d, CPU")  # fmt: skip
    ours, dense = measure(args, "global-faiss", n), measure(args, "global-dense", n)
    print(line("global faiss kNN", n, ours))
    print(line("global dense", n, dense))
    print(f"global: {dense['seconds'] / ours['seconds']:.2f}x faster, peak memory "
          f"{ours['peak_rss_mib'] / dense['peak_rss_mib']:.2f}x of the dense baseline")  # fmt: skip
    local = measure(args, "local-per-camera", n)
    local_small = measure(args, "local-per-camera", small)
    base = measure(args, "local-dense", small)
    print(line("per camera", n, local))
    print(line("per camera", small, local_small))
    print(line("one dense Jaccard", small, base))
    factor = (n / small) ** 2
    print(f"per camera at {small:,}: {base['seconds'] / local_small['seconds']:.2f}x faster, peak "
          f"memory {local_small['peak_rss_mib'] / base['peak_rss_mib']:.2f}x; the dense baseline "
          f"extrapolated to {n:,} (x{factor:.1f}): {base['seconds'] * factor:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
