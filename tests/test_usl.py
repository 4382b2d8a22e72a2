"""The unsupervised mode's stage A around the clustering: ids, tables and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ccafl.errors import UserError
from ccafl.training.local import check_cameras, local_gids, local_table, train_table


def _images(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{name}/{i}.jpg", code, name) for code, (name, n) in enumerate(counts.items())
            for i in range(n)]  # fmt: skip
    return pd.DataFrame(rows, columns=["path", "camera", "camera_name"])


def test_cluster_ids_are_contiguous_by_camera_then_cluster():
    cameras = np.array([1, 0, 1, 0, 2, 1])
    local = np.array([0, 1, 2, 0, 0, 1])
    assert local_gids(cameras, local).tolist() == [2, 1, 4, 0, 5, 3]


def test_tables_follow_the_ics_contract():
    images = _images({"c1": 3, "c2": 2})
    local = np.array([1, 0, 1, 0, 0])
    table = train_table(images, local)
    assert list(table.columns) == ["path", "camera", "camera_name", "intra_id", "gid"]
    assert table["gid"].tolist() == [1, 0, 1, 2, 2]
    assert list(local_table(images, local).columns) == ["path", "camera", "local_cluster"]


def test_one_camera_is_a_one_line_error():
    with pytest.raises(UserError, match="at least 2 cameras; found 1 in t.parquet"):
        check_cameras(_images({"c1": 20}), 5, "t.parquet")


def test_a_camera_too_small_for_the_rule_names_the_camera_and_the_key():
    with pytest.raises(UserError, match=r"camera 'c2' has 3 .*clusters.images_per_cluster=5"):
        check_cameras(_images({"c1": 20, "c2": 3}), 5)
    check_cameras(_images({"c1": 20, "c2": 3}), 3)  # fine at a smaller size
