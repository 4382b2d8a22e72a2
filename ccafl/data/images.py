"""Image access for training and feature extraction.

Two ways to feed a model, with the same augmentation semantics:

* `ImageTable`: a torch dataset over image paths, decoded (and augmented) per item, for
  DataLoader workers: datasets too large to keep decoded in memory.
* `decode_images`: every image decoded once, resized to the network input, into one uint8
  tensor (``train.image_cache``). Batches are then cut from memory and augmented as tensors
  (`ccafl.data.transforms.tensor_train_transform`), which on a CPU removes JPEG decoding from
  every step and on a GPU lets the augmentation run on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ccafl.data.datasets import DatasetError


def open_rgb(path: Path) -> Image.Image:
    """An image as RGB; an unreadable file is a DatasetError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # name the file: a bare PIL error mid-epoch is useless
        raise DatasetError(f"cannot read image {path}: {type(error).__name__}: {error}") from error


class ImageTable(Dataset):
    """Returns ``(image, index)``: the index lets callers look up any label they may read."""

    def __init__(self, root: str | Path, paths: Sequence[str], transform: Callable) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.root / self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(index)), index


def _decode_resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    image = open_rgb(path)
    if image.size != (width, height):  # the same bicubic resize as the PIL transforms
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)  # a writable copy for torch.from_numpy


def decode_images(
    root: str | Path, paths: Sequence[str], size: tuple[int, int], threads: int = 4
) -> torch.Tensor:
    """All images as one uint8 (N, 3, H, W) tensor at the network input size.

    Decoding runs in a thread pool (PIL releases the GIL while it decodes).
    """
    root = Path(root)
    out = torch.empty((len(paths), 3, *size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, pixels in enumerate(pool.map(lambda p: _decode_resized(root / p, size), paths)):
            out[i] = torch.from_numpy(pixels).permute(2, 0, 1)
    return out


def cached_image_bytes(n_images: int, size: tuple[int, int]) -> int:
    return n_images * 3 * size[0] * size[1]
