"""ICS relabelling time on a large Market-1501-style tree (default 100,000 images).

Builds the tree once (tiny JPEGs with real Market-1501 names, in a temp folder), then times
`build_ics` with each image check mode. Baseline measured in the same run: listing the folders
and parsing the names alone (the least any loader must do), so the ratio is the cost of
relabelling + tables + image checks over bare parsing.

    python benchmarks/bench_ics.py --images 100000
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ccafl.data.datasets import MARKET_NAME
from ccafl.data.ics import build_ics


def build_tree(root: Path, n_images: int, n_cameras: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    splits = {"bounding_box_train": 0.4, "query": 0.1, "bounding_box_test": 0.5}
    n_ids = max(2, n_images // 17)  # Market-1501 has ~17 images per identity
    for folder, share in splits.items():
        (root / folder).mkdir(parents=True)
        count = int(n_images * share)
        pids = rng.integers(1, n_ids + 1, count)
        cams = rng.integers(1, n_cameras + 1, count)
        for i, (pid, cam) in enumerate(zip(pids, cams, strict=True)):
            (root / folder / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg").write_bytes(jpeg)


def bare_parse(root: Path) -> int:
    count = 0
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        for name in os.listdir(root / folder):
            count += MARKET_NAME.match(name) is not None
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000, help="images in the tree")
    parser.add_argument("--modes", nargs="+", default=["none", "header", "full"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "market"
        tick = time.perf_counter()
        build_tree(root, args.images)
        print(f"built {args.images} images in {time.perf_counter() - tick:.1f} s")
        tick = time.perf_counter()
        parsed = bare_parse(root)
        baseline = time.perf_counter() - tick
        print(f"baseline (list + parse names only): {parsed} files in {baseline:.2f} s")
        for mode in args.modes:
            tick = time.perf_counter()
            summary = build_ics(root, "market1501", Path(tmp) / f"ics-{mode}", verify=mode)
            seconds = time.perf_counter() - tick
            print(
                f"ics verify={mode}: {seconds:.2f} s for {args.images} images "
                f"({summary['n_gids']} ICS ids), {seconds / baseline:.1f}x the baseline"
            )


if __name__ == "__main__":
    main()
