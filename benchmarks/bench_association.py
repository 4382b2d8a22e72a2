"""Speed and peak memory of ccafl.association.associate against a dense numpy baseline.

The data: clustered centroids like an ICS training set. Each person is seen by a few cameras;
a gid's centroid = person vector + camera bias + noise, gids ordered by camera (as ICS gids
are), generated in float32 in place. Every measurement runs in a fresh worker process so that
its peak resident memory (ru_maxrss, which includes the input matrix) is its own; the peak is
reset right before the timed call where Linux allows it (/proc/self/clear_refs).

The approximate search (``associate(search="approximate")``, what ``association_search: auto``
takes from 50,000 gids on a CPU) runs at the main size beside the exact one, and the edges of
the two graphs are compared: recall and precision of the approximate edges against the exact
ones, overall and on the exact edges that join two gids of one person (true matches).

The baseline is Eq. 12 the obvious way: the full N x N similarity matrix in numpy, argmax per
camera block, the same mutual/threshold test and the same conflict breaking. It runs at
``--dense-gids`` (its matrix is N^2 x 4 bytes: 37 GiB at 100k) and is extrapolated
quadratically; ours runs at both sizes.

    python benchmarks/bench_association.py            # 100k x 2048, 15 cameras (minutes)
    python benchmarks/bench_association.py --quick    # seconds, for CI
    python benchmarks/bench_association.py --latent-dim 0   # identity on every axis: worst case
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccafl.association import associate, association_quality, conflict_free_components  # noqa: E402

GIB = 1024**3


def make_centroids(
    n_gids: int,
    n_cameras: int,
    dim: int,
    cameras_per_person: int,
    seed: int,
    camera_bias: float = 0.5,
    noise: float = 0.6,
    latent_dim: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids float32, camera per gid, true person per gid), gids sorted by camera.

    ``latent_dim`` 0: person vectors isotropic in all ``dim`` axes (the worst case for any
    projection: every axis carries identity). > 0: person vectors on a random
    ``latent_dim``-dimensional subspace with the same energy, as trained embeddings
    concentrate on few axes; camera bias and noise stay isotropic.
    """
    rng = np.random.default_rng(seed)
    per_person = min(cameras_per_person, n_cameras)
    n_persons = -(-n_gids // per_person)
    # Each person gets `per_person` distinct random cameras.
    seen_by = np.argsort(rng.random((n_persons, n_cameras)), axis=1)[:, :per_person]
    person = np.repeat(np.arange(n_persons), per_person)[:n_gids]
    camera = seen_by.ravel()[:n_gids]
    order = np.lexsort((person, camera))
    person, camera = person[order], camera[order]

    scale = np.float32(1 / np.sqrt(dim))
    if latent_dim:
        axes = np.linalg.qr(rng.standard_normal((dim, latent_dim)).astype(np.float32))[0]
        axes = axes.T * np.float32(np.sqrt(dim / latent_dim))
        person_vectors = rng.standard_normal((n_persons, latent_dim), dtype=np.float32) @ axes
    else:
        person_vectors = rng.standard_normal((n_persons, dim), dtype=np.float32)
    bias_vectors = rng.standard_normal((n_cameras, dim), dtype=np.float32) * np.float32(camera_bias)
    centroids = np.empty((n_gids, dim), dtype=np.float32)
    step = 4096
    for start in range(0, n_gids, step):
        block = centroids[start : start + step]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= np.float32(noise)
        block += person_vectors[person[start : start + step]]
        block += bias_vectors[camera[start : start + step]]
        block *= scale
    return centroids, camera, person


def dense_associate(
    centroids: np.ndarray, cameras: np.ndarray, threshold: float
) -> tuple[np.ndarray, int]:
    """Baseline: full similarity matrix, argmax per camera block, same rule downstream."""
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    similarity = unit @ unit.T
    n_gids = len(cameras)
    camera_ids = np.unique(cameras)
    nearest = np.full((n_gids, len(camera_ids)), -1, dtype=np.int64)
    for code, camera in enumerate(camera_ids):
        members = np.flatnonzero(cameras == camera)
        nearest[:, code] = members[np.argmax(similarity[:, members], axis=1)]
    codes = np.searchsorted(camera_ids, cameras)
    nearest[np.arange(n_gids), codes] = -1
    gid, code = np.nonzero(nearest >= 0)
    partner = nearest[gid, code]
    keep = (nearest[partner, codes[gid]] == gid) & (gid < partner)
    src, dst = gid[keep], partner[keep]
    distance = np.sqrt(np.clip(2 - 2 * similarity[src, dst], 0, None)).astype(np.float32)
    below = distance < threshold
    labels, kept = conflict_free_components(
        n_gids, cameras, src[below], dst[below], distance[below]
    )
    return labels, int(kept.sum())


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark so ru_maxrss covers only what follows (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> None:
    """One measurement, printed as one JSON line."""
    centroids, cameras, person = make_centroids(
        args.size,
        args.cameras,
        args.dim,
        args.cameras_per_person,
        args.seed,
        latent_dim=args.latent_dim,
    )
    rss_before = rss_mib()
    peak_reset = reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if args.worker in ("ours", "approximate"):
        search = "exact" if args.worker == "ours" else "approximate"
        labels, edges = associate(centroids, cameras, args.threshold, search=search)
        n_edges = len(edges)
        if args.edges_out:
            pairs = edges[["src_gid", "dst_gid"]].to_numpy()
            np.save(args.edges_out, pairs)
            same_person = person[pairs[:, 0]] == person[pairs[:, 1]]
            np.save(args.edges_out.replace(".npy", "_true.npy"), same_person)
    else:
        labels, n_edges = dense_associate(centroids, cameras, args.threshold)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_start
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    quality = association_quality(labels, person)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "rss_before_mib": rss_before,
                "peak_rss_mib": peak,
                "peak_reset": peak_reset,
                "input_mib": centroids.nbytes / 2**20,
                "n_edges": n_edges,
                "n_clusters": quality["n_clusters"],
                "f_score": quality["f_score"],
                "labels_sha1": hashlib.sha1(labels.astype(np.int64).tobytes()).hexdigest(),
            }
        )
    )


def measure(args: argparse.Namespace, kind: str, size: int, edges_out: str = "") -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--size",
        str(size),
        "--cameras",
        str(args.cameras),
        "--dim",
        str(args.dim),
        "--cameras-per-person",
        str(args.cameras_per_person),
        "--threshold",
        str(args.threshold),
        "--seed",
        str(args.seed),
        "--latent-dim",
        str(args.latent_dim),
        "--edges-out",
        edges_out,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker at {size} gids failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(name: str, size: int, result: dict) -> str:
    return (
        f"{name:<22} {size:>8,} gids  {result['seconds']:8.2f} s "
        f"(CPU {result['cpu_seconds']:.1f} s)  "
        f"peak RSS {result['peak_rss_mib'] / 1024:6.2f} GiB "
        f"(before call {result['rss_before_mib'] / 1024:.2f}, input "
        f"{result['input_mib'] / 1024:.2f})  edges {result['n_edges']:,}  "
        f"clusters {result['n_clusters']:,}  pairwise F {result['f_score']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-gids", type=int, default=100_000, help="gids of the main run")
    parser.add_argument("--cameras", type=int, default=15)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument(
        "--dense-gids", type=int, default=10_000, help="size at which the baseline runs"
    )
    parser.add_argument("--cameras-per-person", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=1.5, help="T (paper: 1.5 / 1.7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latent-dim",
        type=int,
        default=64,
        help="identity on this many axes (trained embeddings concentrate); 0: on all of them",
    )
    parser.add_argument(
        "--skip-exact",
        action="store_true",
        help="main size: approximate search only (no recall); the exact one takes minutes",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (20k x 256, baseline 4k) for CI"
    )
    parser.add_argument(
        "--worker", choices=["ours", "approximate", "dense"], help=argparse.SUPPRESS
    )
    parser.add_argument("--edges-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.n_gids, args.dim, args.dense_gids = 20_000, 256, 4_000
    args.dense_gids = min(args.dense_gids, args.n_gids)

    import faiss

    scale = (args.n_gids / args.dense_gids) ** 2
    flops = 2 * args.n_gids**2 * args.dim * (1 - 1 / args.cameras)
    print(
        f"association benchmark: {args.n_gids:,} gids x {args.dim} dims, {args.cameras} cameras, "
        f"{args.cameras_per_person} cameras per person, T = {args.threshold}, identity on "
        f"{args.latent_dim or args.dim} axes; "
        f"{os.cpu_count()} CPU(s), faiss {faiss.__version__} with "
        f"{faiss.omp_get_max_threads()} threads; exact search = {flops / 1e12:.1f} TFLOP"
    )
    load = "/".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"load average {load}: timings assume otherwise idle CPUs; "
        "'CPU' is the worker's own user+sys time"
    )
    print("peak RSS = ru_maxrss of a fresh worker process, measured over the call only")
    print("(kernel peak mark reset before it), so it includes the resident input matrix.")
    dense = measure(args, "dense", args.dense_gids)
    print(describe("dense numpy baseline", args.dense_gids, dense))
    small = measure(args, "ours", args.dense_gids)
    print(describe("associate", args.dense_gids, small))
    same = "identical" if small["labels_sha1"] == dense["labels_sha1"] else "DIFFERENT"
    print(f"  labels of ours and baseline at {args.dense_gids:,} gids: {same}")
    print(
        f"  at {args.dense_gids:,}: time ours/baseline {small['seconds'] / dense['seconds']:.2f}, "
        f"peak memory ours/baseline {small['peak_rss_mib'] / dense['peak_rss_mib']:.2f}"
    )
    if args.n_gids == args.dense_gids:
        return
    with tempfile.TemporaryDirectory() as scratch:
        approximate_edges = str(Path(scratch) / "approximate.npy")
        exact_edges = str(Path(scratch) / "exact.npy")
        approximate = measure(args, "approximate", args.n_gids, approximate_edges)
        print(describe("associate approximate", args.n_gids, approximate))
        if args.skip_exact:
            return
        full = measure(args, "ours", args.n_gids, exact_edges)
        print(describe("associate exact", args.n_gids, full))
        print_edge_recall(exact_edges, approximate_edges)
    print(
        f"  at {args.n_gids:,}: time approximate/exact "
        f"{approximate['seconds'] / full['seconds']:.3f}, pairwise F approximate - exact "
        f"{approximate['f_score'] - full['f_score']:+.4f}"
    )
    dense_seconds = dense["seconds"] * scale
    dense_gib = args.n_gids**2 * 4 / GIB  # the similarity matrix alone
    print(
        f"dense baseline extrapolated to {args.n_gids:,} gids (x{scale:.0f}): "
        f"{dense_seconds:.0f} s, >= {dense_gib:.1f} GiB for its N x N float32 matrix"
    )
    print(
        f"ratios at {args.n_gids:,}: time exact/baseline {full['seconds'] / dense_seconds:.2f}, "
        f"memory exact/baseline {full['peak_rss_mib'] / 1024 / dense_gib:.3f}; "
        f"exact {flops / full['seconds'] / 1e9:.0f} GFLOP/s effective"
    )
    goal_seconds, goal_gib = 10.0, 2.0
    print(
        f"approximate: goal <= {goal_seconds:.0f} s "
        f"{'met' if approximate['seconds'] <= goal_seconds else 'NOT met'}; goal <= "
        f"{goal_gib:.0f} GiB {'met' if approximate['peak_rss_mib'] / 1024 <= goal_gib else 'NOT met'}"
    )


def print_edge_recall(exact_path: str, approximate_path: str) -> None:
    """Recall and precision of the approximate edges against the exact graph's edges."""
    exact_pairs = np.load(exact_path)
    exact = set(map(tuple, exact_pairs.tolist()))
    approximate = set(map(tuple, np.load(approximate_path).tolist()))
    true = np.load(exact_path.replace(".npy", "_true.npy"))
    exact_true = set(map(tuple, exact_pairs[true].tolist()))
    common = len(exact & approximate)
    print(
        f"  edges: exact {len(exact):,}, approximate {len(approximate):,}; recall "
        f"{common / max(len(exact), 1):.4f}, precision {common / max(len(approximate), 1):.4f}"
    )
    print(
        f"  true-match edges of the exact graph (one person, two cameras): {len(exact_true):,}, "
        f"recall {len(exact_true & approximate) / max(len(exact_true), 1):.4f}; the other "
        f"{len(exact) - len(exact_true):,} join unrelated gids (near-ties)"
    )


if __name__ == "__main__":
    main()
