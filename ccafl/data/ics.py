"""ICS relabelling: per-camera identities become contiguous intra ids and global ICS ids.

The training table written here is the only training input; it has no person-id column, so
no training code can read the cross-camera identity (the ICS rule, enforced structurally).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ccafl.data.datasets import DatasetError, RawDataset, load_dataset
from ccafl.io import write_json, write_parquet

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["path", "camera", "camera_name", "intra_id", "gid"]
TRUTH_COLUMNS = ["path", "pid"]
EVAL_COLUMNS = ["path", "camera", "pid"]


@dataclass
class ICSTables:
    train: pd.DataFrame
    train_truth: pd.DataFrame
    query: pd.DataFrame
    gallery: pd.DataFrame
    summary: dict


def _camera_order(names: pd.Series) -> list[str]:
    """Cameras ordered by their number when named c<k>, else by name."""

    def key(name: str) -> tuple:
        digits = "".join(ch for ch in name if ch.isdigit())
        return (0, int(digits), name) if name.startswith("c") and digits else (1, 0, name)

    return sorted(names.unique(), key=key)


def global_ids(cameras: np.ndarray, intra_ids: np.ndarray) -> np.ndarray:
    """gid = offset[camera] + intra_id, offsets accumulated over cameras in camera order, so
    gids are contiguous and ordered by camera then intra id."""
    per_camera = pd.Series(intra_ids).groupby(np.asarray(cameras)).max().add(1)
    offsets = per_camera.cumsum().shift(fill_value=0)
    return (pd.Series(cameras).map(offsets).to_numpy() + np.asarray(intra_ids)).astype(np.int64)


def relabel(raw: RawDataset, require_test: bool = True) -> ICSTables:
    """Assign intra ids (contiguous per camera) and gids (ordered by camera then intra id).

    ``require_test=False``: empty query and gallery are allowed (DG sources that train on all
    their images, whose evaluation is on the held-out targets)."""
    for split in ("train", "query", "gallery") if require_test else ("train",):
        if len(getattr(raw, split)) == 0:
            raise DatasetError(f"the {split} split of {raw.root} is empty")
    cameras = _camera_order(
        pd.concat([raw.train["camera_name"], raw.query["camera_name"], raw.gallery["camera_name"]])
    )
    camera_index = {name: i for i, name in enumerate(cameras)}

    train = raw.train.copy()
    train["camera"] = train["camera_name"].map(camera_index).astype("int64")
    train = train.sort_values(["camera", "intra_label", "path"], kind="stable")
    train["intra_id"] = train.groupby("camera")["intra_label"].rank(method="dense").astype("int64")
    train["intra_id"] -= 1
    ids_per_camera = train.groupby("camera")["intra_id"].max().add(1)
    train["gid"] = global_ids(train["camera"].to_numpy(), train["intra_id"].to_numpy())
    train = train.reset_index(drop=True)

    if int(ids_per_camera.max()) < 2:
        raise DatasetError(
            f"no camera of {raw.root} has two or more training identities: intra-camera "
            "learning would have nothing to contrast; check the training split's labels"
        )
    for name in cameras:
        n_ids = int(ids_per_camera.get(camera_index[name], 0))
        if n_ids < 2:
            log.warning(
                "camera %s has %d training identit%s: intra-camera learning has no negatives "
                "there; keeping it",
                name,
                n_ids,
                "y" if n_ids == 1 else "ies",
            )

    def eval_table(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out["camera"] = out["camera_name"].map(camera_index).astype("int64")
        out["pid"] = out["pid"].astype("int64")
        return out[EVAL_COLUMNS].reset_index(drop=True)

    tables = ICSTables(
        train=train[TRAIN_COLUMNS].astype({"camera": "int64", "intra_id": "int64"}),
        train_truth=train[TRUTH_COLUMNS].astype({"pid": "int64"}),
        query=eval_table(raw.query),
        gallery=eval_table(raw.gallery),
        summary={},
    )
    tables.summary = summarise(tables, cameras, raw)
    return tables


def summarise(tables: ICSTables, cameras: list[str], raw: RawDataset) -> dict:
    train = tables.train
    per_camera = []
    for index, name in enumerate(cameras):
        rows = train[train["camera"] == index]
        per_camera.append(
            {
                "camera": index,
                "camera_name": name,
                "images": int(len(rows)),
                "ids": int(rows["intra_id"].nunique()),
                "gid_offset": int(rows["gid"].min()) if len(rows) else None,
            }
        )
    eval_splits = {
        split: {
            "images": int(len(df)),
            "ids": int(df.loc[df["pid"] > 0, "pid"].nunique()),
            "junk": int((df["pid"] == -1).sum()),
            "distractors": int((df["pid"] == 0).sum()),
        }
        for split, df in (("query", tables.query), ("gallery", tables.gallery))
    }
    return {
        "dataset_root": str(raw.root),
        "layout": raw.layout or None,
        "cameras": cameras,
        "n_cameras": len(cameras),
        "n_gids": int(train["gid"].nunique()),
        "train": {
            "images": int(len(train)),
            "ids_per_camera": [c["ids"] for c in per_camera],
            "per_camera": per_camera,
            "truth_available": raw.has_train_pid,
            "persons": int(tables.train_truth["pid"].nunique()) if raw.has_train_pid else None,
        },
        **eval_splits,
    }


def _check_image(path: Path, mode: str) -> str | None:
    try:
        with Image.open(path) as image:
            if mode == "full":
                image.load()
            elif image.size[0] == 0 or image.size[1] == 0:
                return "empty image"
    except Exception as error:  # PIL raises many types for bad files
        return f"{type(error).__name__}: {error}"
    return None


def verify_images(root: Path, paths: list[str], mode: str = "header", workers: int = 4) -> None:
    """Fail early, naming the files, rather than mid-training on a bad image."""
    if mode == "none":
        return
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: _check_image(root / p, mode), paths))
    bad = [(p, why) for p, why in zip(paths, results, strict=True) if why is not None]
    if bad:
        listing = "; ".join(f"{root / p} ({why})" for p, why in bad[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        log.info("unreadable images:\n  %s", "\n  ".join(f"{root / p}: {w}" for p, w in bad))
        raise DatasetError(
            f"{len(bad)} unreadable image(s): {listing}{more}; replace or remove them (the "
            "log lists them all)"
        )


def check_evaluable(query: pd.DataFrame, gallery: pd.DataFrame, root: Path) -> int:
    """How many queries have a valid match (same person, other camera; DESIGN section 5).

    None at all is an error found here, before any training, rather than at `evaluate`;
    some without one is a warning (evaluation skips them).
    """
    persons = query.loc[query["pid"] > 0, ["pid", "camera"]].reset_index(names="query")
    candidates = gallery.loc[gallery["pid"] > 0, ["pid", "camera"]].drop_duplicates()
    pairs = persons.merge(candidates, on="pid", suffixes=("", "_gallery"))
    valid = int(pairs.loc[pairs["camera"] != pairs["camera_gallery"], "query"].nunique())
    if valid == 0:
        raise DatasetError(
            f"no query of {root} has a gallery image of the same person from another camera, "
            "so evaluation would have nothing to measure; check the person ids and cameras of "
            "the query and gallery splits"
        )
    if valid < len(query):
        log.warning(
            "%d of %d queries of %s have no gallery image of the same person from another "
            "camera; evaluation will skip them",
            len(query) - valid,
            len(query),
            root,
        )
    return valid


def build_ics(
    root: str | Path,
    fmt: str,
    out_dir: str | Path,
    verify: str = "header",
    layout: str = "auto",
) -> dict:
    """Load, verify and relabel a dataset; write the ICS tables atomically into ``out_dir``."""
    start = time.perf_counter()
    raw = load_dataset(root, fmt, layout)
    if raw.layout:
        log.info("%s layout: %s", fmt, raw.layout)
    tables = relabel(raw)
    check_evaluable(tables.query, tables.gallery, raw.root)
    all_paths = np.concatenate(
        [tables.train["path"], tables.query["path"], tables.gallery["path"]]
    ).tolist()
    verify_images(raw.root, all_paths, verify)
    out_dir = Path(out_dir)
    write_parquet(tables.train, out_dir / "train.parquet")
    write_parquet(tables.train_truth, out_dir / "train_truth.parquet")
    write_parquet(tables.query, out_dir / "query.parquet")
    write_parquet(tables.gallery, out_dir / "gallery.parquet")
    tables.summary["seconds"] = round(time.perf_counter() - start, 3)
    write_json(tables.summary, out_dir / "summary.json")
    return tables.summary
