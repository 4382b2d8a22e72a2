"""Benchmark: `ccafl embed` throughput (images/s) on the CPU, tiny CLIP at 64x32 and RN50 at 256x128.

Measured: ``ccafl.embedding.embed_table`` over JPEG files on disk, i.e. what ``ccafl embed``
does after loading the model: decode, resize, normalise, forward, L2-normalise, in batches.

Baseline, measured in the same run: the bare forward pass of the same model on the same number
of ready-made tensors at the same batch size (no files, no decoding). The ratio says how much
of the embedding time is the model itself; the rest is reading and transforming images.

Models have random weights (no weights are downloaded); speed does not depend on the weights.
Both sides flush denormal floats to zero, as ``embed_table`` does on the CPU (without it the
random tiny CLIP ran 15x slower on real images, whose activations reach the denormal range).
The RN50 run is kept short (``--rn50-images``, default 64): a 256x128 RN50 forward pass costs
about 0.1-0.2 s per image on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ccafl.embedding import embed_table, list_images
from ccafl.models.backbone import ReIDEncoder, create_clip


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """Random JPEGs with Market-1501 names (so the camera comes from the naming)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    for i in range(n):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        name = f"{i // 8 + 1:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg"
        Image.fromarray(pixels).save(folder / name, quality=90)


def run(name: str, size: tuple[int, int], n_images: int, batch_size: int) -> None:
    torch.manual_seed(0)
    model = ReIDEncoder(create_clip(name, None, size).visual).eval()
    with tempfile.TemporaryDirectory(prefix="ccafl-bench-embed-") as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, n_images, size)
        rows, root = list_images(folder)
        embed_table(model, root, rows.iloc[:batch_size], batch_size=batch_size)  # warm-up
        start = time.perf_counter()
        features = embed_table(model, root, rows, batch_size=batch_size)
        embed_s = time.perf_counter() - start

    batches = [torch.randn(min(batch_size, n_images - i), 3, *size) for i in range(0, n_images, batch_size)]  # fmt: skip
    torch.set_flush_denormal(True)  # as embed_table does on the CPU: a like-for-like baseline
    with torch.no_grad():
        model(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        forward_s = time.perf_counter() - start
    torch.set_flush_denormal(False)

    embed_rate, forward_rate = n_images / embed_s, n_images / forward_s
    print(
        f"{name} {size[0]}x{size[1]}, {n_images} images, batch {batch_size}, "
        f"{features.shape[1]}-d: embed {embed_rate:.1f} images/s; bare forward (baseline) "
        f"{forward_rate:.1f} images/s; ratio {embed_rate / forward_rate:.2f} "
        f"(the model is {100 * forward_s / embed_s:.0f}% of the embedding time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny-images", type=int, default=2048)
    parser.add_argument("--rn50-images", type=int, default=64)
    parser.add_argument("--skip-rn50", action="store_true")
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    run("ccafl-tiny-rn", (64, 32), args.tiny_images, batch_size=64)
    if not args.skip_rn50:
        run("RN50", (256, 128), args.rn50_images, batch_size=16)


if __name__ == "__main__":
    main()
