"""Embed a user's images with a trained model: a Parquet table of L2-normalised retrieval features.

Why a table and not a bare array: a feature is only useful with the image it came from, the
camera it was seen by (to search *other* cameras) and the model that made it (features of two
models live in different spaces). So every row carries ``path`` and ``camera`` (and ``pid``
when the file naming or the manifest knows it), and the file's Parquet metadata records the
model file's sha256, the feature's name and width and the images' root folder.

Where the images come from (`list_images`):

* a folder: every image below it (sorted), camera and person id read from the Market-1501,
  DukeMTMC-reID or MSMT17 file naming (``0002_c1s1_000451_03.jpg`` is camera ``c1``, person 2),
  or, with ``camera_from="folder"``, the camera is the image's parent folder name;
* a manifest (``.csv`` or ``.parquet``) with a ``path`` column (relative to the manifest's
  folder or ``root``) and optional ``camera`` and ``pid`` columns; a missing camera column is
  read from the file naming.

Cameras are kept as *names* (strings such as ``c1``), the one form a file name, a manifest
and the evaluation tables (via ``ics/summary.json``) can all be brought to.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from ccafl.data.datasets import DUKE_NAME, IMAGE_SUFFIXES, MARKET_NAME, MSMT_NAME, DatasetError
from ccafl.io import atomic_path

__all__ = [
    "METADATA_KEY",
    "EmbeddingTable",
    "camera_and_pid_from_name",
    "embed_table",
    "file_sha256",
    "list_images",
    "read_embeddings",
    "retrieval_feature_name",
    "write_embeddings",
]

#: Key of the JSON document in the Parquet schema metadata.
METADATA_KEY = b"ccafl"
MANIFEST_SUFFIXES = {".csv", ".parquet"}
_NAMINGS: tuple[re.Pattern, ...] = (MARKET_NAME, DUKE_NAME, MSMT_NAME)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def camera_and_pid_from_name(name: str) -> tuple[str, int] | None:
    """(camera name, person id) from a Market-1501 / DukeMTMC-reID / MSMT17 file name."""
    for pattern in _NAMINGS:
        match = pattern.match(Path(name).name)
        if match is not None:
            return f"c{int(match['cam'])}", int(match["pid"])
    return None


def retrieval_feature_name(model: nn.Module) -> str:
    """Which feature ``f`` of ``model(images) -> (f, p)`` is.

    ``ReIDEncoder`` may name its retrieval feature in a ``retrieval_feature`` attribute (pooled,
    projection or concat); without one, ``f`` is the BN-necked pooled feature.
    """
    return str(getattr(model, "retrieval_feature", None) or "pooled")


def _naming_error(path: str) -> DatasetError:
    return DatasetError(
        f"cannot tell the camera of {path}: its name follows no Market-1501/DukeMTMC/MSMT17 "
        "naming (e.g. 0002_c1s1_000451_03.jpg); give a manifest (.csv/.parquet with path and "
        "camera columns) or use --camera-from folder"
    )


def _from_naming(paths: list[str], camera_from: str) -> tuple[list[str], list[int] | None]:
    """Cameras (and person ids, when every name carries one) of ``paths``."""
    cameras: list[str] = []
    pids: list[int] = []
    for path in paths:
        parsed = camera_and_pid_from_name(path)
        if parsed is not None:
            pids.append(parsed[1])
        if camera_from == "folder":
            folder = Path(path).parent.name
            if not folder:
                raise DatasetError(
                    f"{path} is not inside a camera folder (--camera-from folder reads the "
                    "camera from the image's parent folder name)"
                )
            cameras.append(folder)
        elif parsed is not None:
            cameras.append(parsed[0])
        else:
            raise _naming_error(path)
    return cameras, (pids if len(pids) == len(paths) else None)


def _read_manifest(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as error:  # pandas/pyarrow raise many types for a bad file
        raise DatasetError(f"cannot read manifest {path}: {error}") from error
    if "path" not in table.columns:
        raise DatasetError(
            f"manifest {path} has no 'path' column (columns: {list(table.columns)}); it needs "
            "path and, optionally, camera and pid"
        )
    return table


def list_images(
    images: str | Path, root: str | Path | None = None, camera_from: str = "auto"
) -> tuple[pd.DataFrame, Path]:
    """The images to embed as a table (``path``, ``camera`` [, ``pid``]) and their root folder.

    ``images`` is a folder or a manifest (see the module docstring). ``camera_from``: ``auto``
    or ``name`` (file naming), ``folder`` (the parent folder's name). Paths in the table are
    relative to the returned root unless the manifest gave absolute ones.
    """
    images = Path(images)
    if camera_from not in ("auto", "name", "folder"):
        raise ValueError(f"camera_from must be auto, name or folder, got {camera_from!r}")
    if images.is_dir():
        base = Path(root) if root is not None else images
        files = sorted(
            p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {images}")
        paths = [p.relative_to(base).as_posix() for p in files]
        cameras, pids = _from_naming(paths, camera_from)
        table = pd.DataFrame({"path": paths, "camera": cameras})
        if pids is not None:
            table["pid"] = np.asarray(pids, dtype=np.int64)
        return table, base.resolve()
    if images.is_file() and images.suffix.lower() in MANIFEST_SUFFIXES:
        base = Path(root) if root is not None else images.parent
        manifest = _read_manifest(images)
        table = pd.DataFrame({"path": manifest["path"].astype(str)})
        if "camera" in manifest.columns:
            table["camera"] = manifest["camera"].astype(str)
            if "pid" in manifest.columns:
                table["pid"] = manifest["pid"].astype(np.int64)
        else:
            cameras, pids = _from_naming(table["path"].tolist(), camera_from)
            table["camera"] = cameras
            if "pid" in manifest.columns:
                table["pid"] = manifest["pid"].astype(np.int64)
            elif pids is not None:
                table["pid"] = np.asarray(pids, dtype=np.int64)
        if table.empty:
            raise DatasetError(f"manifest {images} lists no images")
        return table, base.resolve()
    if images.exists():
        raise DatasetError(
            f"{images} is neither a folder of images nor a manifest (.csv or .parquet)"
        )
    raise DatasetError(f"images not found: {images}")


@dataclass
class EmbeddingTable:
    """Rows (``path``, ``camera`` [, ``pid``]), their features (n x d float32) and metadata."""

    rows: pd.DataFrame
    features: np.ndarray
    metadata: dict = field(default_factory=dict)


def embed_table(
    model: nn.Module,
    root: str | Path,
    rows: pd.DataFrame,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """L2-normalised retrieval features ``f`` of ``rows['path']`` (n x d float32), in order.

    Uses the same un-augmented transform and loader as the evaluation stage
    (:func:`ccafl.inference.features.extract_features`), at the model's own input size.

    On the CPU, denormal floats are flushed to zero meanwhile: activations in the denormal
    range made a forward pass 15x slower (measured on the tiny CLIP with real images,
    benchmarks/bench_embed.py), and values below 1.2e-38 change no normalised feature.
    """
    from ccafl.inference.features import extract_features

    input_size = tuple(int(v) for v in model.visual.image_size)
    flush = torch.device(device).type == "cpu" and torch.set_flush_denormal(True)
    try:
        features = extract_features(
            model,
            root,
            rows["path"].tolist(),
            input_size,
            batch_size=batch_size,
            num_workers=num_workers,
            device=torch.device(device),
            desc="embedding",
        )
    finally:
        if flush:
            torch.set_flush_denormal(False)  # torch's default; it offers no getter
    return F.normalize(features.float(), dim=1).numpy().astype(np.float32)


def write_embeddings(table: EmbeddingTable, path: str | Path) -> Path:
    """Atomic Parquet write: the row columns, ``feature`` (fixed-size list<float32>), metadata."""
    n, dim = table.features.shape
    if n != len(table.rows):
        raise ValueError(f"{n} features for {len(table.rows)} rows")
    arrow = pa.Table.from_pandas(table.rows.reset_index(drop=True), preserve_index=False)
    values = pa.array(np.ascontiguousarray(table.features, dtype=np.float32).ravel())
    arrow = arrow.append_column("feature", pa.FixedSizeListArray.from_arrays(values, dim))
    metadata = {**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(table.metadata)}
    arrow = arrow.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return Path(path)


def feature_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(n x d) float32 from a list or fixed-size-list column, without a Python loop."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if array.null_count:
        raise ValueError("the feature column has missing values")
    flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise ValueError("feature vectors have different lengths")
    return flat.reshape(n, flat.size // n)


def read_embeddings(path: str | Path) -> EmbeddingTable:
    """An embedding table written by :func:`write_embeddings`, or any Parquet table with
    ``path``, ``camera`` and a list-valued ``feature`` column (e.g. eval/features.parquet)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"features file not found: {path}")
    try:
        arrow = pq.read_table(path)
    except Exception as error:
        raise DatasetError(f"cannot read features file {path}: {error}") from error
    missing = [c for c in ("path", "camera", "feature") if c not in arrow.column_names]
    if missing:
        raise DatasetError(
            f"{path} lacks column(s) {missing}; a features table needs path, camera and feature "
            "(as written by `ccafl embed` or the evaluate rule)"
        )
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    features = feature_matrix(arrow.column("feature"))
    rows = arrow.drop_columns(["feature"]).to_pandas()
    return EmbeddingTable(rows, features, metadata)
