"""A torch dataset over a table of image paths; labels stay outside it, in the caller's arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ccafl.data.datasets import DatasetError


class ImageTable(Dataset):
    """Returns ``(image, index)``: the index lets callers look up any label they may read."""

    def __init__(self, root: str | Path, paths: Sequence[str], transform: Callable) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except Exception as error:  # name the file: a bare PIL error mid-epoch is useless
            raise DatasetError(
                f"cannot read image {path}: {type(error).__name__}: {error}"
            ) from error

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(index)), index
