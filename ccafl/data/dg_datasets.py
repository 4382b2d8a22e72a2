"""Loaders for the datasets of CLIP-FGDI's protocols that are not ICS datasets: CUHK03-NP,
CUHK02, CUHK-SYSU (sources), and PRID, GRID, VIPeR, iLIDS (the small Protocol-1 targets).

The file namings and test protocols are the ones the DG literature reads (CLIP-FGDI's official
code, Qi5Lei/CLIP-FGDI ``datasets/``, which follows torchreid's):

* **CUHK03-NP** (Zhong et al., CVPR 2017): Market-1501 folders under ``labeled/`` or
  ``detected/``, names ``<pid>_c<camera>_<n>.png``; 767 training and 700 test identities.
* **CUHK02** (Li and Wang, CVPR 2013): five camera pairs ``P1`` .. ``P5``, each with ``cam1/``
  and ``cam2/``; names start with the person's number within its pair. P1-P4 train, P5 tests
  (query cam1, gallery cam2). Pairs have their own person numbers, so the pair is part of the
  person id; the ten cameras are ``c1`` .. ``c10``.
* **CUHK-SYSU** (Xiao et al., CVPR 2017), the cropped persons ``cropped_images/p<pid>_s<n>.jpg``:
  training only (one camera), as every DG protocol uses it.
* **PRID 2011** single-shot: ``single_shot/cam_a`` and ``cam_b``, ``person_<pid>.png``. Persons
  1-200 are seen by both cameras; a split trains on 100 of them and tests on the other 100
  (query cam_a, gallery cam_b) with cam_b's unpaired persons 201-749 as gallery distractors.
* **GRID** (``underground_reid``): ``probe/`` and ``gallery/``, names ``<pid>_<camera>_...``,
  person 0 = unpaired gallery distractors; the ten train/test partitions are the dataset's own
  (``features_and_partitions.mat``, 125 training persons each).
* **VIPeR**: ``cam_a/`` and ``cam_b/``, one image per person and camera, paired by sorted
  name; a split trains on half the 632 persons, query cam_a and gallery cam_b of the rest.
* **iLIDS** (i-LIDS single-shot): ``Persons/<pid:4><n:3>.jpg``, 119 persons; a split trains on
  half of them and tests on the others with two of each person's images drawn as query and
  gallery (no camera ids: query images are camera c1, gallery images c2, so no gallery image
  is excluded).

**Splits.** PRID, VIPeR and iLIDS have no split files: the protocol is ten random splits of
the given sizes, and every code base draws its own (torchreid and CLIP-FGDI write a
``splits.json`` into the dataset folder on first use, from an unseeded generator). Here split
``k`` is drawn by ``numpy.random.default_rng(k)`` over the sorted person ids, so every user gets
the same ten splits and the dataset folder is never written. GRID's come from its file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ccafl.data.raw import (
    RAW_COLUMNS,
    DatasetError,
    RawDataset,
    _images_in,
    _matched_images,
    _parse_names,
    _require_dir,
    _row,
    _with_train_labels,
)

N_SPLITS = 10
TEST_SPLIT = "test_split"  # the column of a target's tables naming each row's split

CUHK03_NAME = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)_(?P<n>\d+)\.")
CUHK03_LAYOUTS = ("labeled", "detected")
CUHK02_PAIRS = ("P1", "P2", "P3", "P4", "P5")
CUHK02_TEST_PAIR = "P5"
CUHK02_PAIR_STRIDE = 10_000  # pid = pair number * stride + the person's number in its pair
CUHK02_NAME = re.compile(r"^(?P<pid>\d+)_")
SYSU_NAME = re.compile(r"^p(?P<pid>\d+)_s(?P<n>\d+)")
PRID_NAME = re.compile(r"^person_(?P<pid>\d+)\.")
PRID_PAIRED = 200  # persons 1..200 are seen by both cameras (PRID 2011 single-shot)
GRID_NAME = re.compile(r"^(?P<pid>\d+)_(?P<cam>\d+)_")
ILIDS_NAME = re.compile(r"^(?P<pid>\d{4})(?P<n>\d{3})\.")

EXAMPLES = {
    "cuhk03np": "0001_c1_1.png",
    "cuhk02": "P1/cam1/0001_1.png",
    "cuhksysu": "cropped_images/p1_s1.jpg",
    "prid": "single_shot/cam_a/person_0001.png",
    "grid": "probe/0001_1_25004_107_32_106_177.jpeg",
    "viper": "cam_a/000_45.bmp",
    "ilids": "Persons/0001001.jpg",
}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RAW_COLUMNS).astype({"pid": "int64"})


def _named(folder: Path, pattern: re.Pattern, fmt: str) -> list[tuple[Path, re.Match]]:
    """Every image of ``folder`` with its name's match (`_matched_images`)."""
    return _matched_images(_require_dir(folder), pattern, fmt, EXAMPLES[fmt])


def _check_split(fmt: str, split: int | None, n_splits: int) -> int:
    split = 0 if split is None else split
    if not isinstance(split, int) or not 0 <= split < n_splits:
        raise DatasetError(
            f"{fmt} split {split!r} out of range: the protocol has splits 0..{n_splits - 1} "
            "(dg.domains.<name>.split)"
        )
    return split


# CUHK03-NP ------------------------------------------------------------------------------


def cuhk03np_dir(root: Path, layout: str) -> Path:
    """The Market-style folder of CUHK03-NP: ``root/<labeled|detected>``, or ``root`` itself
    when it already holds the three folders."""
    layout = "labeled" if layout == "auto" else layout
    if layout not in CUHK03_LAYOUTS:
        raise DatasetError(
            f"unknown CUHK03-NP layout {layout!r} (dg.domains.<name>.layout); known: auto "
            f"(= labeled), {', '.join(CUHK03_LAYOUTS)}"
        )
    root = _require_dir(Path(root))
    if (root / "bounding_box_train").is_dir():
        return root
    folder = root / layout
    if not folder.is_dir():
        raise DatasetError(
            f"dataset folder not found: {folder} (CUHK03-NP keeps labeled/ and detected/, each "
            "with bounding_box_train/, query/, bounding_box_test/)"
        )
    return folder


def load_cuhk03np(root: Path, layout: str = "auto") -> RawDataset:
    """CUHK03-NP, the labeled boxes unless ``layout`` is ``detected`` (CLIP-FGDI: labeled)."""
    root = _require_dir(Path(root))
    folder = cuhk03np_dir(root, layout)

    def split(name: str) -> pd.DataFrame:
        return _parse_names(
            root, _require_dir(folder / name), CUHK03_NAME, "CUHK03-NP", EXAMPLES["cuhk03np"]
        )

    train = split("bounding_box_train")
    return RawDataset(
        root,
        _with_train_labels(train),
        split("query"),
        split("bounding_box_test"),
        layout=folder.name if folder != root else "",
    )


# CUHK02 ---------------------------------------------------------------------------------


def _cuhk02_pair(root: Path, pair: str) -> pd.DataFrame:
    number = CUHK02_PAIRS.index(pair) + 1
    rows = []
    for cam in (1, 2):
        for image, match in _named(root / pair / f"cam{cam}", CUHK02_NAME, "cuhk02"):
            pid = number * CUHK02_PAIR_STRIDE + int(match["pid"])
            rows.append(_row(root, image, f"c{2 * (number - 1) + cam}", pid))
    return _table(rows)


def load_cuhk02(root: Path) -> RawDataset:
    root = _require_dir(Path(root))
    missing = [pair for pair in CUHK02_PAIRS if not (root / pair).is_dir()]
    if missing:
        raise DatasetError(
            f"dataset folder not found: {root / missing[0]} (CUHK02 has the camera pairs "
            f"{', '.join(CUHK02_PAIRS)}, each with cam1/ and cam2/)"
        )
    train = pd.concat(
        [_cuhk02_pair(root, p) for p in CUHK02_PAIRS if p != CUHK02_TEST_PAIR], ignore_index=True
    )
    test = _cuhk02_pair(root, CUHK02_TEST_PAIR)
    first_camera = f"c{2 * len(CUHK02_PAIRS) - 1}"
    query = test[test["camera_name"] == first_camera].reset_index(drop=True)
    gallery = test[test["camera_name"] != first_camera].reset_index(drop=True)
    return RawDataset(root, _with_train_labels(train), query, gallery)


# CUHK-SYSU ------------------------------------------------------------------------------


def load_cuhksysu(root: Path) -> RawDataset:
    """The cropped persons, all for training (one camera); no query or gallery."""
    root = _require_dir(Path(root))
    rows = [
        _row(root, image, "c1", int(match["pid"]))
        for image, match in _named(root / "cropped_images", SYSU_NAME, "cuhksysu")
    ]
    empty = _table([])
    return RawDataset(root, _with_train_labels(_table(rows)), empty, empty.copy())


# The split-based targets ----------------------------------------------------------------


def _split_ids(ids: list[int], n_train: int, split: int) -> tuple[set[int], list[int]]:
    """Split ``split`` of the sorted ``ids``: (training ids, test ids in sorted order)."""
    order = np.random.default_rng(split).permutation(len(ids))
    ordered = sorted(ids)
    train = {ordered[i] for i in order[:n_train]}
    return train, [i for i in ordered if i not in train]


def _paired_split(
    root: Path, cam_a: dict[int, Path], cam_b: dict[int, Path], paired: list[int], split: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on half the paired persons (both cameras); query cam_a, gallery cam_b of the rest."""
    train_ids, test_ids = _split_ids(paired, len(paired) // 2, split)
    cameras = ((cam_a, "c1"), (cam_b, "c2"))
    train = [_row(root, cam[p], name, p) for p in sorted(train_ids) for cam, name in cameras]
    query = [_row(root, cam_a[p], "c1", p) for p in test_ids]
    gallery = [_row(root, cam_b[p], "c2", p) for p in test_ids]
    return _table(train), _table(query), _table(gallery)


def prid_dir(root: Path) -> Path:
    root = _require_dir(Path(root))
    folder = root / "single_shot" if (root / "single_shot").is_dir() else root
    for cam in ("cam_a", "cam_b"):
        if not (folder / cam).is_dir():
            raise DatasetError(
                f"dataset folder not found: {folder / cam} (PRID 2011: single_shot/cam_a and "
                "single_shot/cam_b)"
            )
    return folder


def load_prid(root: Path, split: int | None = None) -> RawDataset:
    root = _require_dir(Path(root))
    split = _check_split("prid", split, N_SPLITS)
    folder = prid_dir(root)
    cams = [
        {int(m["pid"]): image for image, m in _named(folder / cam, PRID_NAME, "prid")}
        for cam in ("cam_a", "cam_b")
    ]
    paired = [p for p in sorted(cams[0]) if p <= PRID_PAIRED and p in cams[1]]
    if len(paired) < 2:
        raise DatasetError(
            f"{folder}: fewer than two persons among 1-{PRID_PAIRED} are in both cam_a and "
            "cam_b; PRID's single-shot persons 1-200 are the paired ones"
        )
    train, query, gallery = _paired_split(root, cams[0], cams[1], paired, split)
    unpaired = [_row(root, cams[1][p], "c2", 0) for p in sorted(cams[1]) if p > PRID_PAIRED]
    gallery = pd.concat([gallery, _table(unpaired)], ignore_index=True)
    return RawDataset(root, _with_train_labels(train), query, gallery, layout=f"split {split}")


def load_viper(root: Path, split: int | None = None) -> RawDataset:
    root = _require_dir(Path(root))
    split = _check_split("viper", split, N_SPLITS)
    images = []
    for cam in ("cam_a", "cam_b"):
        folder = root / cam
        if not folder.is_dir():
            raise DatasetError(f"dataset folder not found: {folder} (VIPeR: cam_a/ and cam_b/)")
        images.append(_images_in(folder))
    if len(images[0]) != len(images[1]) or len(images[0]) < 2:
        raise DatasetError(
            f"{root}: cam_a has {len(images[0])} images and cam_b {len(images[1])}; VIPeR has "
            "one image per person in each camera, paired by sorted name"
        )
    cam_a = {i + 1: path for i, path in enumerate(images[0])}
    cam_b = {i + 1: path for i, path in enumerate(images[1])}
    train, query, gallery = _paired_split(root, cam_a, cam_b, sorted(cam_a), split)
    return RawDataset(root, _with_train_labels(train), query, gallery, layout=f"split {split}")


def ilids_dir(root: Path) -> Path:
    root = _require_dir(Path(root))
    for folder in (root / "Persons", root / "i-LIDS_Pedestrian" / "Persons"):
        if folder.is_dir():
            return folder
    raise DatasetError(f"dataset folder not found: {root / 'Persons'} (iLIDS: Persons/*.jpg)")


def load_ilids(root: Path, split: int | None = None) -> RawDataset:
    root = _require_dir(Path(root))
    split = _check_split("ilids", split, N_SPLITS)
    persons: dict[int, list[Path]] = {}
    for image, match in _named(ilids_dir(root), ILIDS_NAME, "ilids"):
        persons.setdefault(int(match["pid"]), []).append(image)
    train_ids, test_ids = _split_ids(list(persons), len(persons) // 2, split)
    train = [_row(root, image, "c1", p) for p in sorted(train_ids) for image in persons[p]]
    rng = np.random.default_rng([split, 1])  # the query and gallery image of each test person
    query, gallery = [], []
    for p in test_ids:
        if len(persons[p]) < 2:
            raise DatasetError(
                f"iLIDS person {p:04d} has one image in {ilids_dir(root)}; a test person needs "
                "two (query and gallery)"
            )
        first, second = rng.choice(len(persons[p]), size=2, replace=False)
        query.append(_row(root, persons[p][first], "c1", p))
        gallery.append(_row(root, persons[p][second], "c2", p))
    return RawDataset(
        root,
        _with_train_labels(_table(train)),
        _table(query),
        _table(gallery),
        layout=f"split {split}",
    )


def grid_dir(root: Path) -> Path:
    root = _require_dir(Path(root))
    folder = root / "underground_reid" if (root / "underground_reid").is_dir() else root
    for name in ("probe", "gallery"):
        if not (folder / name).is_dir():
            raise DatasetError(
                f"dataset folder not found: {folder / name} (GRID: underground_reid/ with "
                "probe/, gallery/ and features_and_partitions.mat)"
            )
    if not (folder / "features_and_partitions.mat").is_file():
        raise DatasetError(
            f"GRID partition file not found: {folder / 'features_and_partitions.mat'} (it comes "
            "with the dataset and defines its ten train/test splits)"
        )
    return folder


def grid_partitions(folder: Path) -> list[list[int]]:
    """The training persons of each of GRID's splits (``trainIdxAll`` of its .mat file)."""
    from scipy.io import loadmat

    path = folder / "features_and_partitions.mat"
    try:
        entries = loadmat(path)["trainIdxAll"][0]
        return [[int(i) for i in entry[0][0][2][0]] for entry in entries]
    except Exception as error:  # scipy raises many types for a foreign file
        raise DatasetError(
            f"cannot read GRID's partitions from {path}: {type(error).__name__} {error}; it "
            "needs the trainIdxAll struct of the original file"
        ) from None


def n_grid_splits(root: Path) -> int:
    return len(grid_partitions(grid_dir(root)))


def load_grid(root: Path, split: int | None = None) -> RawDataset:
    root = _require_dir(Path(root))
    folder = grid_dir(root)
    partitions = grid_partitions(folder)
    split = _check_split("grid", split, len(partitions))
    train_ids = set(partitions[split])
    parts: dict[str, list[dict]] = {"train": [], "probe": [], "gallery": []}
    for name in ("probe", "gallery"):
        for image, match in _named(folder / name, GRID_NAME, "grid"):
            pid = int(match["pid"])
            row = _row(root, image, f"c{int(match['cam'])}", pid)
            parts["train" if pid in train_ids else name].append(row)
    return RawDataset(
        root,
        _with_train_labels(_table(parts["train"])),
        _table(parts["probe"]),
        _table(parts["gallery"]),
        layout=f"split {split}",
    )


# Registry -------------------------------------------------------------------------------

SPLIT_LOADERS = {"prid": load_prid, "grid": load_grid, "viper": load_viper, "ilids": load_ilids}
PLAIN_LOADERS = {"cuhk02": load_cuhk02, "cuhksysu": load_cuhksysu}
FORMATS = ("cuhk03np", *PLAIN_LOADERS, *SPLIT_LOADERS)
TRAIN_ONLY = ("cuhksysu",)


def n_splits(root: str | Path, fmt: str) -> int:
    """How many protocol splits a split-based dataset has (GRID: its file's; others: 10)."""
    return n_grid_splits(Path(root)) if fmt == "grid" else N_SPLITS


def load(root: str | Path, fmt: str, layout: str = "auto", split: int | None = None) -> RawDataset:
    """One of `FORMATS` (through `ccafl.data.datasets.load_dataset`, which refuses a split for
    the others); ``split`` picks a split-based one's protocol split."""
    if fmt in SPLIT_LOADERS:
        return SPLIT_LOADERS[fmt](Path(root), split)
    if fmt == "cuhk03np":
        return load_cuhk03np(Path(root), layout)
    return PLAIN_LOADERS[fmt](Path(root))


def check_layout(root: Path, fmt: str, layout: str = "auto") -> None:
    """The folders (and GRID's partition file) of ``fmt`` exist; no image is opened."""
    if fmt == "cuhk03np":
        folder = cuhk03np_dir(root, layout)
        for name in ("bounding_box_train", "query", "bounding_box_test"):
            _require_dir(folder / name)
    elif fmt == "cuhk02":
        for pair in CUHK02_PAIRS:
            for cam in ("cam1", "cam2"):
                _require_dir(root / pair / cam)
    elif fmt == "cuhksysu":
        _require_dir(root / "cropped_images")
    elif fmt == "prid":
        prid_dir(root)
    elif fmt == "grid":
        grid_dir(root)
    elif fmt == "viper":
        for cam in ("cam_a", "cam_b"):
            _require_dir(root / cam)
    elif fmt == "ilids":
        ilids_dir(root)
