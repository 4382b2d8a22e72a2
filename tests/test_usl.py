"""The unsupervised mode's stage A around the clustering: ids, tables and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_market_tree, build_msmt_tree, snakemake_dry_run

from ccafl.errors import UserError
from ccafl.training.local import check_cameras, local_gids, local_table, train_table

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    ("dataset_config", "build"),
    [
        ("market1501.yaml", build_market_tree),
        ("dukemtmc.yaml", lambda root: build_market_tree(root, layout="dukemtmc")),
        ("msmt17.yaml", build_msmt_tree),
    ],
)
def test_calr_overlay_plans_stage_a_and_refined_stage_3_on_each_real_dataset(
    tmp_path: Path, dataset_config: str, build
) -> None:
    """config/calr.yaml laid over a paper config: the main run clusters each camera (stage A)
    and trains stage 3 on refined clusters, with CALR's stage-A schedule."""
    root = build(tmp_path / "data")
    weights = tmp_path / "RN50.pt"  # planned, not read: a dry run opens no weights
    weights.write_bytes(b"")
    out = snakemake_dry_run(
        tmp_path,
        str(REPO / "config" / "calr.yaml"),
        "--config",
        f"dataset={json.dumps({'root': str(root)})}",
        f"clip={json.dumps({'pretrained': str(weights)})}",
        configfile=REPO / "config" / dataset_config,
    )
    assert re.search(r"^\s*(?:local)?rule local_clusters:", out, re.M), out[-2000:]
    inter = [line for line in out.splitlines() if " inter-epoch " in line]
    assert inter and all('"labels": "refined"' in line for line in inter)
    stage_a = next(line for line in out.splitlines() if " local-clusters " in line)
    assert '"epochs": 25' in stage_a and '"images_per_cluster": 5' in stage_a


def test_per_camera_models_each_learn_from_their_own_camera_only(tiny_dataset, tmp_path):
    """clusters.models: per_camera trains one model per camera: a camera's clusters are those
    of a model trained on that camera's images alone, whatever the other cameras hold; the
    shared trunk (the default) writes the same table contract."""
    from conftest import tiny_config

    from ccafl.settings import Settings
    from ccafl.training.local import IMAGE_COLUMNS, _cluster_then_train, run_local_clusters

    images = pd.read_parquet(tiny_dataset["ics"] / "train.parquet")[IMAGE_COLUMNS]
    config = tiny_config(tiny_dataset["root"], clusters={"epochs": 1, "images_per_cluster": 3})
    config["clusters"]["models"] = "per_camera"
    settings = Settings.from_config(config)
    metrics = run_local_clusters(settings, images, tiny_dataset["clip"], tmp_path / "per")
    per_camera = pd.read_parquet(tmp_path / "per" / "local_clusters.parquet")
    assert metrics["models"] == "per_camera"
    assert {row["camera"] for row in metrics["history"]} == set(images["camera"])
    assert "camera" in pd.read_parquet(tmp_path / "per" / "log.parquet").columns

    camera = int(images["camera"].iloc[0])
    alone = images[images["camera"] == camera].reset_index(drop=True)
    stage_a = settings.replace(train=settings.train.replace(epochs=1, warmup_epochs=0))
    local, _, _ = _cluster_then_train(stage_a, alone, tiny_dataset["clip"])
    own = per_camera[per_camera["camera"] == camera]["local_cluster"].to_numpy()
    np.testing.assert_array_equal(own, local)

    config["clusters"]["models"] = "shared"
    shared = run_local_clusters(
        Settings.from_config(config), images, tiny_dataset["clip"], tmp_path / "shared"
    )
    assert shared["models"] == "shared"
    table = pd.read_parquet(tmp_path / "shared" / "local_clusters.parquet")
    assert list(table.columns) == list(per_camera.columns)
    # The same size rule per camera: the two tables hold as many clusters per camera.
    assert shared["final"]["clusters_per_camera"] == metrics["final"]["clusters_per_camera"]
