"""MSMT17 in its three layouts: the official lists (V1, V2) and the Market-style copy.

The same people are written in every layout, so the ICS tables must agree apart from the
paths; person 0000 is a real MSMT17 person in all of them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_image

from ccafl.data.datasets import DatasetError, detect_msmt17_layout, load_dataset
from ccafl.data.ics import build_ics

# (pid, camera) of every image, MSMT17's own 0-based labels; person 0 appears in both splits.
TRAIN = [(0, 1), (0, 1), (0, 2), (1, 1), (1, 3), (2, 2), (2, 2), (3, 3), (3, 1)]
VAL = [(4, 2), (4, 3)]  # list_val.txt: part of the ICS training set
QUERY = [(0, 2), (1, 3)]
GALLERY = [(0, 3), (0, 1), (1, 2), (2, 1)]
# ICS ids = distinct (person, camera) pairs of train + val.
TRAIN_PAIRS = sorted(set(TRAIN + VAL))


def _list_name(pid: int, cam: int, index: int) -> str:
    return f"{pid:04d}/{pid:04d}_{index:03d}_{cam:02d}_0303morning_{index:04d}_0.jpg"


def build_lists(root: Path, train_dir: str, test_dir: str) -> Path:
    index = 0
    for list_name, folder, items in [
        ("list_train.txt", train_dir, TRAIN),
        ("list_val.txt", train_dir, VAL),
        ("list_query.txt", test_dir, QUERY),
        ("list_gallery.txt", test_dir, GALLERY),
    ]:
        lines = []
        for pid, cam in items:
            index += 1
            rel = _list_name(pid, cam, index)
            write_image(root / folder / rel, index)
            lines.append(f"{rel} {pid}")
        root.mkdir(parents=True, exist_ok=True)
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def build_market_style(root: Path) -> Path:
    """bounding_box_train/, bounding_box_test/, query/ with <pid>_c<camera>_<n> names."""
    index = 0
    for folder, items in [
        ("bounding_box_train", TRAIN + VAL),
        ("query", QUERY),
        ("bounding_box_test", GALLERY),
    ]:
        for pid, cam in items:
            index += 1
            write_image(root / folder / f"{pid:04d}_c{cam}_{index:04d}.jpg", index)
    return root


BUILDERS = {
    "lists_v1": lambda root: build_lists(root, "train", "test"),
    "lists_v2": lambda root: build_lists(root, "mask_train_v2", "mask_test_v2"),
    "market": build_market_style,
}


@pytest.mark.parametrize("layout", list(BUILDERS))
def test_each_layout_is_detected_and_counted(tmp_path: Path, layout: str) -> None:
    root = BUILDERS[layout](tmp_path / "MSMT17")
    assert detect_msmt17_layout(root) == layout
    summary = build_ics(root, "msmt17", tmp_path / "ics")
    assert summary["layout"] == layout
    assert summary["n_gids"] == len(TRAIN_PAIRS) == 9
    assert summary["train"]["images"] == len(TRAIN) + len(VAL)
    # c1: persons 0, 1, 3; c2: 0, 2, 4; c3: 1, 3, 4
    assert summary["train"]["ids_per_camera"] == [3, 3, 3]
    assert summary["train"]["persons"] == 5  # person 0000 included
    truth = pd.read_parquet(tmp_path / "ics" / "train_truth.parquet")
    assert sorted(truth["pid"].unique()) == [1, 2, 3, 4, 5]  # labels shifted by one
    gallery = pd.read_parquet(tmp_path / "ics" / "gallery.parquet")
    assert summary["gallery"]["distractors"] == summary["gallery"]["junk"] == 0
    assert sorted(gallery["pid"]) == [1, 1, 2, 3]  # person 0000 is a match, not a distractor


def test_layouts_of_the_same_data_give_the_same_tables(tmp_path: Path) -> None:
    tables = {}
    for layout, build in BUILDERS.items():
        root = build(tmp_path / layout)
        build_ics(root, "msmt17", tmp_path / f"ics-{layout}")
        tables[layout] = {
            split: pd.read_parquet(tmp_path / f"ics-{layout}" / f"{split}.parquet")
            for split in ("train", "train_truth", "query", "gallery")
        }
    reference = tables["lists_v1"]
    for layout in ("lists_v2", "market"):
        for split, table in tables[layout].items():
            columns = [c for c in table.columns if c != "path"]

            def rows(frame: pd.DataFrame, cols: list[str] = columns) -> list[tuple]:
                return sorted(map(tuple, frame[cols].to_numpy().tolist()))

            assert rows(table) == rows(reference[split]), (layout, split)


def test_both_layouts_in_one_root_is_ambiguous(tmp_path: Path) -> None:
    root = build_market_style(build_lists(tmp_path / "MSMT17", "train", "test"))
    with pytest.raises(DatasetError, match="ambiguous MSMT17 layout") as err:
        load_dataset(root, "msmt17")
    message = str(err.value)
    assert "\n" not in message and "lists_v1 and market" in message and "dataset.layout" in message
    assert load_dataset(root, "msmt17", "market").layout == "market"
    assert load_dataset(root, "msmt17", "lists_v1").layout == "lists_v1"


def test_v1_and_v2_folders_together_are_ambiguous(tmp_path: Path) -> None:
    root = build_lists(tmp_path / "MSMT17", "train", "test")
    build_lists(root, "mask_train_v2", "mask_test_v2")
    with pytest.raises(DatasetError, match="lists_v1 and lists_v2"):
        load_dataset(root, "msmt17")


def test_v2_folder_names_in_capitals(tmp_path: Path) -> None:
    root = build_lists(tmp_path / "MSMT17_V2", "mask_train_V2", "mask_test_V2")
    assert detect_msmt17_layout(root) == "lists_v2"
    assert len(load_dataset(root, "msmt17").train) == len(TRAIN) + len(VAL)


def test_no_layout_names_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "MSMT17" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no MSMT17 layout") as err:
        load_dataset(tmp_path / "MSMT17", "msmt17")
    assert "list_train.txt" in str(err.value) and "bounding_box_train" in str(err.value)


def test_market_style_name_that_does_not_fit_is_named(tmp_path: Path) -> None:
    root = build_market_style(tmp_path / "MSMT17")
    write_image(root / "query" / "person_7.jpg")
    with pytest.raises(DatasetError, match="person_7.jpg"):
        load_dataset(root, "msmt17")


def test_layout_key_is_msmt17_only(market_tree: Path) -> None:
    with pytest.raises(DatasetError, match="applies to formats msmt17 and cuhk03np only"):
        load_dataset(market_tree, "market1501", "market")
