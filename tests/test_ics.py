"""Loaders on fixture trees with the real namings, and the ICS relabelling invariants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    MARKET_TRAIN,
    build_custom_tree,
    build_market_tree,
    build_msmt_tree,
    write_image,
)

from ccafl.data.datasets import DatasetError, load_dataset
from ccafl.data.ics import TRAIN_COLUMNS, build_ics, relabel


def check_relabelling(train: pd.DataFrame) -> None:
    """gid contiguous, ordered by camera then intra_id; intra_id contiguous per camera."""
    pairs = train[["camera", "intra_id", "gid"]].drop_duplicates().sort_values("gid")
    assert pairs["gid"].tolist() == list(range(len(pairs)))
    assert pairs.sort_values(["camera", "intra_id"])["gid"].tolist() == pairs["gid"].tolist()
    for _, group in pairs.groupby("camera"):
        assert sorted(group["intra_id"]) == list(range(len(group)))
    assert train.groupby("gid")["camera"].nunique().max() == 1


@pytest.mark.parametrize("layout", ["market1501", "dukemtmc"])
def test_market_style_loaders(tmp_path: Path, layout: str) -> None:
    root = build_market_tree(tmp_path / layout, layout)
    summary = build_ics(root, layout, tmp_path / "ics")
    train = pd.read_parquet(tmp_path / "ics" / "train.parquet")
    truth = pd.read_parquet(tmp_path / "ics" / "train_truth.parquet")
    gallery = pd.read_parquet(tmp_path / "ics" / "gallery.parquet")
    check_relabelling(train)
    # One ICS id per (pid, camera): the paper's accumulation of per-camera id counts.
    expected = sum(len(cams) for cams in MARKET_TRAIN.values())
    assert summary["n_gids"] == expected == train["gid"].nunique()
    assert summary["train"]["ids_per_camera"] == [3, 3, 2]
    assert len(train) == 2 * expected  # Thumbs.db skipped
    assert (
        list(truth.columns) == ["path", "pid"] and truth["path"].tolist() == train["path"].tolist()
    )
    assert set(gallery["pid"]) == {-1, 0, 20, 21}
    assert summary["gallery"]["junk"] == 1 and summary["gallery"]["distractors"] == 1
    assert summary["query"]["images"] == 2
    on_disk = json.loads((tmp_path / "ics" / "summary.json").read_text())
    assert on_disk["n_gids"] == expected


def test_training_table_never_has_pid(market_tree: Path, tmp_path: Path) -> None:
    build_ics(market_tree, "market1501", tmp_path / "ics")
    train = pd.read_parquet(tmp_path / "ics" / "train.parquet")
    assert list(train.columns) == TRAIN_COLUMNS
    assert "pid" not in train.columns


def test_same_person_different_cameras_get_different_gids(market_tree: Path) -> None:
    tables = relabel(load_dataset(market_tree, "market1501"))
    joined = tables.train.assign(pid=tables.train_truth["pid"])
    gids_of_11 = joined.loc[joined["pid"] == 11, "gid"].unique()
    assert len(gids_of_11) == 3


@pytest.mark.parametrize("folders", [("train", "test"), ("mask_train_v2", "mask_test_v2")])
def test_msmt17_lists_train_plus_val(tmp_path: Path, folders: tuple[str, str]) -> None:
    root = build_msmt_tree(tmp_path / "msmt", *folders)
    summary = build_ics(root, "msmt17", tmp_path / "ics")
    train = pd.read_parquet(tmp_path / "ics" / "train.parquet")
    check_relabelling(train)
    assert len(train) == 5  # list_train (3) + list_val (2)
    # pid 0@c1, 0@c2, 1@c1, 2@c2, 2@c3 -> c1: 2 ids, c2: 2 ids, c3: 1 id
    assert summary["n_gids"] == 5
    query = pd.read_parquet(tmp_path / "ics" / "query.parquet")
    assert query["pid"].tolist() == [1]  # labels shifted by one: 0 means distractor
    assert train["path"].str.startswith(folders[0] + "/").all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_custom_manifest(tmp_path: Path, fmt: str) -> None:
    root = build_custom_tree(tmp_path / "custom", fmt)
    summary = build_ics(root, "custom", tmp_path / "ics")
    train = pd.read_parquet(tmp_path / "ics" / "train.parquet")
    check_relabelling(train)
    assert summary["cameras"] == ["entrance", "hall"]
    assert summary["n_gids"] == 5 and summary["train"]["truth_available"] is False


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere"):
        load_dataset(tmp_path / "nowhere", "market1501")
    (tmp_path / "m").mkdir()
    with pytest.raises(DatasetError, match="bounding_box_train"):
        load_dataset(tmp_path / "m", "market1501")


def test_unknown_file_naming_is_named(market_tree: Path) -> None:
    write_image(market_tree / "query" / "IMG_2024.jpg")
    with pytest.raises(DatasetError, match="market1501 naming: .*IMG_2024.jpg"):
        load_dataset(market_tree, "market1501")


def test_duke_names_rejected_by_market_loader(tmp_path: Path) -> None:
    root = build_market_tree(tmp_path / "duke", "dukemtmc")
    with pytest.raises(DatasetError, match="naming"):
        load_dataset(root, "market1501")


@pytest.mark.parametrize("mode", ["header", "full"])
def test_corrupt_image_is_named(market_tree: Path, tmp_path: Path, mode: str) -> None:
    bad = market_tree / "bounding_box_test" / "0020_c3s1_000099_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DatasetError, match="0020_c3s1_000099_00.jpg"):
        build_ics(market_tree, "market1501", tmp_path / "ics", verify=mode)
    assert not (tmp_path / "ics" / "train.parquet").exists()  # nothing half-written


def test_truncated_image_caught_by_full_check(market_tree: Path, tmp_path: Path) -> None:
    good = sorted((market_tree / "query").iterdir())[0]
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=good.name):
        build_ics(market_tree, "market1501", tmp_path / "ics", verify="full")


def test_camera_with_one_id_warns_and_continues(
    market_tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_image(market_tree / "bounding_box_train" / "0030_c4s1_000001_00.jpg")
    with caplog.at_level(logging.WARNING):
        summary = build_ics(market_tree, "market1501", tmp_path / "ics")
    assert "camera c4 has 1 training identity" in caplog.text
    assert summary["train"]["ids_per_camera"][-1] == 1


def test_empty_split_is_an_error(market_tree: Path) -> None:
    for image in (market_tree / "query").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="query split .* is empty"):
        relabel(load_dataset(market_tree, "market1501"))


def test_custom_manifest_missing_column(tmp_path: Path) -> None:
    root = build_custom_tree(tmp_path / "custom")
    pd.read_csv(root / "train.csv").drop(columns="intra_id").to_csv(root / "train.csv")
    with pytest.raises(DatasetError, match="train.csv lacks column.*intra_id"):
        load_dataset(root, "custom")


def test_msmt_bad_list_line(tmp_path: Path) -> None:
    root = build_msmt_tree(tmp_path / "msmt")
    (root / "list_val.txt").write_text("garbage line without label\n")
    with pytest.raises(DatasetError, match="list_val.txt:1"):
        load_dataset(root, "msmt17")
