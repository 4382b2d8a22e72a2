"""What every dataset loader shares: the loaded splits, the error naming a bad file, and the
walk over a folder's images by their file names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ccafl.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
RAW_COLUMNS = ["path", "camera_name", "pid"]  # a loaded split's table (train adds intra_label)


class DatasetError(UserError, ValueError):
    """Bad dataset input: the message names the file or folder at fault."""


@dataclass
class RawDataset:
    """Splits as loaded from disk. train: path, camera_name, intra_label (+ pid if known);
    query/gallery: path, camera_name, pid. Paths are relative to ``root``."""

    root: Path
    train: pd.DataFrame
    query: pd.DataFrame
    gallery: pd.DataFrame
    has_train_pid: bool = True
    layout: str = ""  # which of a format's layouts was read (MSMT17: lists_v1, lists_v2, market)


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f"dataset folder not found: {path}")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _matched_images(
    directory: Path, pattern: re.Pattern, naming: str, example: str
) -> list[tuple[Path, re.Match]]:
    """Every image of ``directory`` with its file name's match of ``pattern``; a name that
    does not match is a one-line error naming the file and an example of the naming."""
    out = []
    for image in _images_in(directory):
        match = pattern.match(image.name)
        if match is None:
            raise DatasetError(
                f"file name does not follow the {naming} naming: {image} (expected e.g. {example})"
            )
        out.append((image, match))
    return out


def _row(root: Path, image: Path, camera: str, pid: int) -> dict:
    """One image's row of a split table (`RAW_COLUMNS`), its path relative to ``root``."""
    return {"path": image.relative_to(root).as_posix(), "camera_name": camera, "pid": int(pid)}


def _parse_names(
    root: Path, directory: Path, pattern: re.Pattern, naming: str, example: str
) -> pd.DataFrame:
    """path, camera_name, pid of every image in ``directory`` from its file name."""
    rows = [
        _row(root, image, f"c{int(match['cam'])}", int(match["pid"]))
        for image, match in _matched_images(directory, pattern, naming, example)
    ]
    return pd.DataFrame(rows, columns=RAW_COLUMNS)


def _with_train_labels(train: pd.DataFrame) -> pd.DataFrame:
    """Training ignores junk (-1) and distractors (0), as the ICS protocol does."""
    train = train[train["pid"] > 0].copy()
    train["intra_label"] = train["pid"]
    return train
