"""Loaders for the real dataset layouts: each returns plain tables with the person id.

The person id is read here because evaluation needs it; `ccafl.data.ics` splits it off the
training table before anything downstream sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ccafl.data import dg_datasets
from ccafl.data.raw import (  # noqa: F401 (re-exported: the loaders' shared types)
    IMAGE_SUFFIXES,
    DatasetError,
    RawDataset,
    _images_in,
    _parse_names,
    _require_dir,
    _with_train_labels,
)

MARKET_NAME = re.compile(
    r"^(?P<pid>-?\d+)_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d+)_(?P<box>\d+)\."
)
DUKE_NAME = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)_f(?P<frame>\d+)\.")
MSMT_NAME = re.compile(r"^(?P<pid>\d+)_(?P<idx>\d+)_(?P<cam>\d+)_(?P<time>\w+?)_(?P<frame>\d+)_")
# MSMT17 converted to the Market-1501 folders (the layout the CCAFL authors' ClusterContrast-based
# code reads): names start with <pid>_c<camera>, e.g. 0000_c14_0000.jpg or 0000_c14s1_000001_00.jpg.
MSMT_MARKET_NAME = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)(?=[_s.])")


def _parse_folder(root: Path, folder: str, pattern: re.Pattern, layout: str) -> pd.DataFrame:
    return _parse_names(root, _require_dir(root / folder), pattern, layout, _EXAMPLES[layout])


_EXAMPLES = {
    "market1501": "0002_c1s1_000451_03.jpg",
    "dukemtmc": "0001_c2_f0046182.jpg",
    "msmt17": "0000/0000_000_01_0303morning_0015_0.jpg 0",
    "msmt17-market": "0000_c14_0000.jpg",
}


def load_market_style(root: Path, layout: str) -> RawDataset:
    pattern = MARKET_NAME if layout == "market1501" else DUKE_NAME
    root = _require_dir(Path(root))
    train = _parse_folder(root, "bounding_box_train", pattern, layout)
    query = _parse_folder(root, "query", pattern, layout)
    gallery = _parse_folder(root, "bounding_box_test", pattern, layout)
    return RawDataset(root, _with_train_labels(train), query, gallery)


def load_market1501(root: Path) -> RawDataset:
    return load_market_style(root, "market1501")


def load_dukemtmc(root: Path) -> RawDataset:
    return load_market_style(root, "dukemtmc")


MSMT17_LAYOUTS = {
    "lists_v1": ("train", "test"),
    "lists_v2": ("mask_train_v2", "mask_test_v2"),
    "market": ("bounding_box_train", "bounding_box_test", "query"),
}


def _child_dir(root: Path, name: str) -> Path | None:
    """``root/name`` matched case-insensitively (MSMT17_V2 copies spell mask_train_V2, too)."""
    if (root / name).is_dir():
        return root / name
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def detect_msmt17_layout(root: Path) -> str:
    """Which MSMT17 layout ``root`` holds (lists_v1, lists_v2, market); a one-line error if
    it holds none or several.

    The official release has list files next to ``train/`` + ``test/`` (V1) or
    ``mask_train_v2/`` + ``mask_test_v2/`` (V2); ICS code bases (ClusterContrast, and the
    CCAFL authors' code built on it) read a copy converted to Market-1501's three folders.
    """
    has_lists = (root / "list_train.txt").is_file()
    found = [
        layout
        for layout, folders in MSMT17_LAYOUTS.items()
        if (has_lists or layout == "market") and all(_child_dir(root, f) for f in folders)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(
            f"no MSMT17 layout in {root}: expected list_train.txt etc. with train/ + test/ (V1) "
            "or mask_train_v2/ + mask_test_v2/ (V2), or bounding_box_train/ + "
            "bounding_box_test/ + query/ (Market-style)"
        )
    raise DatasetError(
        f"ambiguous MSMT17 layout in {root}: it holds {' and '.join(found)}; "
        "set dataset.layout to one of them"
    )


def _msmt_market_folder(root: Path, folder: str) -> pd.DataFrame:
    """One folder of the Market-style MSMT17 copy, with MSMT17's own 0-based labels."""
    directory = _child_dir(root, folder)
    if directory is None:
        raise DatasetError(f"dataset folder not found: {root / folder} (dataset.layout market)")
    return _parse_names(
        root, directory, MSMT_MARKET_NAME, "Market-style MSMT17", _EXAMPLES["msmt17-market"]
    )


def _msmt_lists(root: Path, layout: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train (list_train + list_val), query and gallery of the official release."""
    train_name, test_name = MSMT17_LAYOUTS[layout]
    train_dir, test_dir = _child_dir(root, train_name), _child_dir(root, test_name)
    if train_dir is None or test_dir is None:
        missing = train_name if train_dir is None else test_name
        raise DatasetError(f"dataset folder not found: {root / missing} (dataset.layout {layout})")
    train = pd.concat(
        [
            _parse_msmt_list(root, "list_train.txt", train_dir),
            _parse_msmt_list(root, "list_val.txt", train_dir),
        ],
        ignore_index=True,
    )
    query = _parse_msmt_list(root, "list_query.txt", test_dir)
    gallery = _parse_msmt_list(root, "list_gallery.txt", test_dir)
    return train, query, gallery


def _parse_msmt_list(root: Path, list_name: str, image_dir: Path) -> pd.DataFrame:
    list_file = root / list_name
    if not list_file.is_file():
        raise DatasetError(f"MSMT17 list file not found: {list_file}")
    rows = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        match = MSMT_NAME.match(Path(parts[0]).name) if len(parts) == 2 else None
        if match is None:
            raise DatasetError(
                f"{list_file}:{line_no}: line does not follow the MSMT17 list format "
                f"(expected e.g. {_EXAMPLES['msmt17']}): {line!r}"
            )
        rows.append(
            {
                "path": (image_dir / parts[0]).relative_to(root).as_posix(),
                "camera_name": f"c{int(match['cam'])}",
                "pid": int(parts[1]),
            }
        )
    return pd.DataFrame(rows, columns=["path", "camera_name", "pid"])


def load_msmt17(root: Path, layout: str = "auto") -> RawDataset:
    """MSMT17 in any of its layouts (`detect_msmt17_layout`; ``layout`` forces one).

    * official lists (V1 ``train/``, ``test/``; V2 ``mask_train_v2/``, ``mask_test_v2/``):
      train + val lists form the training set, as in the ICS literature;
    * Market-style ``bounding_box_train/``, ``bounding_box_test/``, ``query/``.

    Person ids: MSMT17 labels persons from 0 and has no distractors, so in both layouts person
    0000 is a real person (read as Market-1501, it would be dropped as a distractor). Every
    label is shifted by one so that 0 keeps meaning "distractor" in every format's tables;
    junk (-1, which MSMT17 itself does not use) stays -1. Both layouts of the same data give
    identical tables apart from the paths.
    """
    root = _require_dir(Path(root))
    if layout == "auto":
        layout = detect_msmt17_layout(root)
    if layout not in MSMT17_LAYOUTS:
        known = ", ".join(["auto", *MSMT17_LAYOUTS])
        raise DatasetError(f"unknown MSMT17 layout {layout!r} (dataset.layout); known: {known}")
    if layout == "market":
        train, gallery, query = (_msmt_market_folder(root, f) for f in MSMT17_LAYOUTS["market"])
        train = train[train["pid"] >= 0].copy()  # junk never trains
    else:
        train, query, gallery = _msmt_lists(root, layout)
    for table in (train, query, gallery):
        table.loc[table["pid"] >= 0, "pid"] += 1
    train["intra_label"] = train["pid"]
    return RawDataset(root, train, query, gallery, layout=layout)


def _rows(table: pd.DataFrame, mask: pd.Series, path: Path) -> str:
    """Where flagged rows are, as a user finds them: CSV line numbers (header = line 1)."""
    positions = [int(i) for i in mask.to_numpy().nonzero()[0]]
    csv = path.suffix == ".csv"
    shown = ", ".join(str(i + 2 if csv else i + 1) for i in positions[:5])
    more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
    return f"{'line' if csv else 'row'}{'s' if len(positions) > 1 else ''} {shown}{more}"


def _check_manifest_cells(table: pd.DataFrame, path: Path, required: list[str]) -> None:
    """Blank and ill-typed cells, named by file, line and column (pid must be an integer)."""
    for column in required:
        values = table[column]
        blank = values.isna() | values.astype(str).str.strip().eq("")
        if blank.any():
            raise DatasetError(
                f"manifest {path} {_rows(table, blank, path)}: blank {column}; every row "
                f"needs {', '.join(required)}"
            )
    for column in ("pid",):
        if column not in table.columns:
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() | (numbers != numbers.round())
        if bad.any():
            first = table.loc[bad, column].iloc[0]
            raise DatasetError(
                f"manifest {path} {_rows(table, bad, path)}: {column} {first!r} is not an "
                "integer (person ids are integers; 0 = distractor, -1 = junk)"
            )


def _check_manifest_paths(table: pd.DataFrame, path: Path) -> None:
    """Each image once, under one camera: a duplicate would count twice or contradict."""
    repeated = table["path"].duplicated(keep=False)
    if not repeated.any():
        return
    image = table.loc[repeated, "path"].iloc[0]
    same = table["path"] == image
    cameras = table.loc[same, "camera_name"].unique()
    if len(cameras) > 1:
        raise DatasetError(
            f"manifest {path} {_rows(table, same, path)}: image {image} is listed under "
            f"cameras {', '.join(map(str, cameras))}; an image has one camera"
        )
    raise DatasetError(
        f"manifest {path} {_rows(table, repeated, path)}: image {image} is listed more than "
        "once; list each image once"
    )


def _read_manifest(root: Path, split: str, required: list[str]) -> pd.DataFrame:
    path = _manifest_path(root, split)
    reader = pd.read_parquet if path.suffix == ".parquet" else pd.read_csv
    try:
        table = reader(path)
    except Exception as error:  # pandas/pyarrow raise many types for a malformed file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"cannot read manifest {path}: {first}") from error
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(f"manifest {path} lacks column(s) {missing}; it needs {required}")
    _check_manifest_cells(table, path, required)
    table = table.copy()
    table["path"] = table["path"].astype(str)
    table["camera_name"] = table["camera"].astype(str)
    if "pid" in table.columns:
        table["pid"] = pd.to_numeric(table["pid"]).astype("int64")
    _check_manifest_paths(table, path)
    return table


def _check_cameras_agree(root: Path, tables: dict[str, pd.DataFrame]) -> None:
    """An image listed in two manifests must have the same camera in both."""
    rows = pd.concat(
        [
            table[["path", "camera_name"]].assign(manifest=str(_manifest_path(root, split)))
            for split, table in tables.items()
        ]
    )
    cameras = rows.groupby("path")["camera_name"].nunique()
    conflicts = cameras[cameras > 1]
    if len(conflicts):
        image = conflicts.index[0]
        where = rows[rows["path"] == image]
        pairs = zip(where["camera_name"], where["manifest"], strict=True)
        listed = ", ".join(f"{camera} in {manifest}" for camera, manifest in pairs)
        raise DatasetError(
            f"image {image} is listed under two cameras ({listed}); an image has one camera"
        )


def load_custom(root: Path) -> RawDataset:
    """A user's own cameras: ``train.csv`` (path, camera, intra_id[, pid]) and
    ``query.csv`` / ``gallery.csv`` (path, camera, pid); Parquet works too.

    Every cell is checked (blank, pid not an integer), and an image listed twice, or under two
    cameras, is an error naming the manifest and its lines.
    """
    root = _require_dir(Path(root))
    train = _read_manifest(root, "train", ["path", "camera", "intra_id"])
    has_pid = "pid" in train.columns
    train["intra_label"] = train["intra_id"]
    if not has_pid:
        train["pid"] = -1
    query = _read_manifest(root, "query", ["path", "camera", "pid"])
    gallery = _read_manifest(root, "gallery", ["path", "camera", "pid"])
    _check_cameras_agree(root, {"train": train, "query": query, "gallery": gallery})
    columns = ["path", "camera_name", "pid"]
    return RawDataset(
        root,
        train[columns + ["intra_label"]],
        query[columns],
        gallery[columns],
        has_train_pid=has_pid,
    )


LOADERS: dict[str, Callable[[Path], RawDataset]] = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "custom": load_custom,
    # The synthetic benchmark is written in the Market-1501 layout on purpose.
    "synthetic": load_market1501,
}


def _manifest_path(root: Path, split: str) -> Path:
    for suffix in (".parquet", ".csv"):
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    raise DatasetError(f"manifest not found: {root / split}.csv (or .parquet)")


def check_layout(root: str | Path, fmt: str, layout: str = "auto") -> None:
    """The folders and list files of ``fmt`` exist under ``root`` (no file is opened).

    Cheap enough to run while the workflow is parsed; the loaders check every file name later.
    """
    root = _require_dir(Path(root))
    if fmt in ("market1501", "dukemtmc", "synthetic"):
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            _require_dir(root / folder)
    elif fmt == "msmt17":
        layout = detect_msmt17_layout(root) if layout == "auto" else layout
        if layout not in MSMT17_LAYOUTS:
            known = ", ".join(["auto", *MSMT17_LAYOUTS])
            raise DatasetError(f"unknown MSMT17 layout {layout!r} (dataset.layout); known: {known}")
        for folder in MSMT17_LAYOUTS[layout]:
            if _child_dir(root, folder) is None:
                raise DatasetError(
                    f"dataset folder not found: {root / folder} (dataset.layout {layout})"
                )
        if layout != "market":
            for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
                if not (root / name).is_file():
                    raise DatasetError(f"MSMT17 list file not found: {root / name}")
    elif fmt == "custom":
        for split in ("train", "query", "gallery"):
            _manifest_path(root, split)
    else:
        if fmt not in dg_datasets.FORMATS:
            raise DatasetError(f"unknown dataset format {fmt!r}; known: {known_formats()}")
        dg_datasets.check_layout(root, fmt, layout)


def known_formats() -> list[str]:
    return sorted([*LOADERS, *dg_datasets.FORMATS])


def load_dataset(
    root: str | Path, fmt: str, layout: str = "auto", split: int | None = None
) -> RawDataset:
    """The dataset at ``root`` in format ``fmt``; ``layout`` picks among MSMT17's layouts (and
    CUHK03-NP's labeled/detected boxes), ``split`` one of a small DG target's protocol splits
    (`ccafl.data.dg_datasets`)."""
    if fmt not in LOADERS and fmt not in dg_datasets.FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {known_formats()}")
    if layout != "auto" and fmt not in ("msmt17", "cuhk03np"):
        raise DatasetError(
            f"dataset.layout {layout!r} applies to formats msmt17 and cuhk03np only (format is "
            f"{fmt!r}); leave it at auto"
        )
    if split is not None and fmt not in dg_datasets.SPLIT_LOADERS:
        raise DatasetError(
            f"a split applies to {', '.join(dg_datasets.SPLIT_LOADERS)} only (format is "
            f"{fmt!r}); remove it"
        )
    if fmt in dg_datasets.FORMATS:
        return dg_datasets.load(root, fmt, layout, split)
    if fmt == "msmt17":
        return load_msmt17(Path(root), layout)
    return LOADERS[fmt](Path(root))
