"""The DG protocols' datasets (issue 20): CUHK03-NP, CUHK02, CUHK-SYSU, PRID, GRID, VIPeR and
iLIDS read in their real namings, the small targets' ten protocol splits, combine_all sources,
per-split evaluation, and the one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_market_tree, write_image
from dg_fixtures import BUILDERS, build_grid, build_prid, build_viper, write_grid_partitions

from ccafl.checks import config_problems
from ccafl.config import validate
from ccafl.data import dg_datasets
from ccafl.data.datasets import DatasetError, check_layout, load_dataset
from ccafl.data.dg_datasets import TEST_SPLIT
from ccafl.data.pooled import Domain, pool_sources, target_tables
from ccafl.evaluation import rank_metrics
from ccafl.retrieval import _per_split


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dg-datasets")
    return {fmt: build(base / fmt) for fmt, build in BUILDERS.items()}


def load(trees, fmt, **kwargs):
    return load_dataset(trees[fmt], fmt, **kwargs)


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_every_format_reads_its_layout(trees, fmt) -> None:
    check_layout(trees[fmt], fmt)
    raw = load(trees, fmt, **({"split": 3} if fmt in dg_datasets.SPLIT_LOADERS else {}))
    assert len(raw.train) and (raw.train["pid"] > 0).all()
    assert (raw.train["intra_label"] == raw.train["pid"]).all()
    for table in (raw.train, raw.query, raw.gallery):
        assert all((trees[fmt] / p).is_file() for p in table["path"])
    if fmt != "cuhksysu":
        test_ids = set(raw.query["pid"]) | set(raw.gallery.loc[raw.gallery.pid > 0, "pid"])
        assert not test_ids & set(raw.train["pid"]), "training and test persons overlap"


def test_cuhk03np_reads_labeled_by_default_and_detected_on_request(trees) -> None:
    labeled = load(trees, "cuhk03np")
    detected = load(trees, "cuhk03np", layout="detected")
    assert labeled.train["path"].str.startswith("labeled/").all()
    assert detected.train["path"].str.startswith("detected/").all()
    assert sorted(labeled.query["pid"]) == [5, 6, 7]
    assert set(labeled.train["camera_name"]) == {"c1", "c2"}


def test_cuhk02_keeps_each_camera_pair_its_own_persons(trees) -> None:
    raw = load(trees, "cuhk02")
    # person 0001 of P1 and person 0001 of P2 are different people
    assert {10001, 20001} <= set(raw.train["pid"])
    assert raw.train["camera_name"].nunique() == 8  # P1-P4, two cameras each
    assert set(raw.query["camera_name"]) == {"c9"} and set(raw.gallery["camera_name"]) == {"c10"}
    assert set(raw.query["pid"]) == set(raw.gallery["pid"]) == {50001, 50002, 50003}


def test_cuhksysu_is_training_only(trees) -> None:
    raw = load(trees, "cuhksysu")
    assert raw.query.empty and raw.gallery.empty
    assert sorted(raw.train["pid"].unique()) == [1, 2, 3, 4, 5]


def test_prid_pairs_persons_1_to_200_and_keeps_cam_b_extras_as_distractors(trees) -> None:
    raw = load(trees, "prid", split=0)
    assert len(raw.train) == 8 and set(raw.train["camera_name"]) == {"c1", "c2"}
    assert set(raw.query["camera_name"]) == {"c1"} and set(raw.gallery["camera_name"]) == {"c2"}
    distractors = raw.gallery[raw.gallery["pid"] == 0]
    assert len(distractors) == 3 and distractors["path"].str.contains("cam_b").all()
    everything = pd.concat([raw.train, raw.query, raw.gallery])
    unpaired_a = everything["path"].str.contains("cam_a/person_02")
    assert not unpaired_a.any(), "cam_a's persons 201+ match nobody and are never read"


def test_viper_pairs_images_by_sorted_name(trees) -> None:
    raw = load(trees, "viper", split=0)
    for pid in raw.query["pid"]:
        q = raw.query.loc[raw.query.pid == pid, "path"].item()
        g = raw.gallery.loc[raw.gallery.pid == pid, "path"].item()
        assert q.split("/")[1][:3] == g.split("/")[1][:3]


def test_ilids_draws_two_different_images_of_each_test_person(trees) -> None:
    raw = load(trees, "ilids", split=2)
    assert len(raw.query) == len(raw.gallery) == 4
    merged = raw.query.merge(raw.gallery, on="pid", suffixes=("_q", "_g"))
    assert (merged["path_q"] != merged["path_g"]).all()
    assert merged["path_q"].str[8:12].astype(int).eq(merged["pid"]).all()


def test_grid_splits_are_the_dataset_files_own(tmp_path: Path) -> None:
    root = build_grid(tmp_path / "grid")
    partitions = [[1, 2, 3, 4]] * 5 + [[5, 6, 7, 8]] * 5
    write_grid_partitions(root / "underground_reid" / "features_and_partitions.mat", partitions)
    raw = load_dataset(root, "grid", split=7)
    assert sorted(raw.train["pid"].unique()) == [5, 6, 7, 8]
    assert sorted(raw.query["pid"]) == [1, 2, 3, 4]
    assert (raw.gallery["pid"] == 0).sum() == 3  # the unpaired gallery images stay, as negatives
    assert dg_datasets.n_splits(root, "grid") == 10


@pytest.mark.parametrize("fmt", ["prid", "viper", "ilids"])
def test_random_splits_are_fixed_halves_and_differ_from_each_other(trees, fmt) -> None:
    splits = [load(trees, fmt, split=k) for k in range(10)]
    again = load(trees, fmt, split=4)
    pd.testing.assert_frame_equal(again.query, splits[4].query)
    train_sets = {frozenset(raw.train["pid"]) for raw in splits}
    assert len(train_sets) > 1, "every split drew the same persons"
    assert {len(s) for s in train_sets} == {4}  # half of the 8 paired persons


def test_split_out_of_range_and_split_on_other_formats_are_named(trees) -> None:
    with pytest.raises(DatasetError, match=r"prid split 10 out of range.*0\.\.9"):
        load(trees, "prid", split=10)
    with pytest.raises(DatasetError, match="split applies to"):
        load(trees, "cuhk02", split=1)


def test_a_misnamed_file_is_named(tmp_path: Path) -> None:
    root = build_viper(tmp_path / "v")
    write_image(tmp_path / "c" / "cropped_images" / "person1.jpg")
    with pytest.raises(DatasetError, match=r"cuhksysu naming: .*person1\.jpg \(expected e\.g\."):
        load_dataset(tmp_path / "c", "cuhksysu")
    (root / "cam_b" / "000_90.bmp").unlink()
    with pytest.raises(DatasetError, match="cam_a has 8 images and cam_b 7"):
        load_dataset(root, "viper", split=0)


def test_missing_folders_and_files_are_named(tmp_path: Path) -> None:
    root = build_grid(tmp_path / "g")
    (root / "underground_reid" / "features_and_partitions.mat").unlink()
    with pytest.raises(DatasetError, match="GRID partition file not found"):
        check_layout(root, "grid")
    prid = build_prid(tmp_path / "p")
    shutil.rmtree(prid / "single_shot" / "cam_b")
    with pytest.raises(DatasetError, match=r"dataset folder not found: .*cam_b"):
        check_layout(prid, "prid")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"not found: .*labeled"):
        check_layout(tmp_path / "empty", "cuhk03np")


def test_a_target_with_every_split_writes_them_all(trees, tmp_path: Path) -> None:
    target = Domain("prid", "prid", trees["prid"])
    summary = target_tables(target, trees["prid"].parent, tmp_path / "t", verify="none")
    query = pd.read_parquet(tmp_path / "t" / "query.parquet")
    gallery = pd.read_parquet(tmp_path / "t" / "gallery.parquet")
    assert summary["test_splits"] == list(range(10))
    assert sorted(query[TEST_SPLIT].unique()) == list(range(10))
    one = Domain("prid", "prid", trees["prid"], split=9)
    target_tables(one, trees["prid"].parent, tmp_path / "one", verify="none")
    nine = pd.read_parquet(tmp_path / "one" / "query.parquet")
    pd.testing.assert_frame_equal(
        nine, query[query[TEST_SPLIT] == 9].reset_index(drop=True), check_dtype=False
    )
    assert len(gallery) == 10 * 7


def test_combine_all_is_what_a_source_does_a_target_keeps_its_test_split(trees, tmp_path) -> None:
    target = Domain("c3", "cuhk03np", trees["cuhk03np"], combine_all=True)
    target_tables(target, trees["cuhk03np"].parent, tmp_path / "t", verify="none")
    query = pd.read_parquet(tmp_path / "t" / "query.parquet")
    assert sorted(query["pid"]) == [5, 6, 7]


def test_per_split_metrics_are_the_mean_of_each_split_on_its_own() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for split in range(3):
        for pid in range(1, 5):
            rows.append((split, pid))
    query = pd.DataFrame(rows, columns=[TEST_SPLIT, "pid"]).assign(camera=0)
    gallery = pd.concat([query.assign(camera=1), query.assign(camera=1, pid=0)], ignore_index=True)
    q = torch.from_numpy(rng.normal(size=(len(query), 8)).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=(len(gallery), 8)).astype(np.float32))
    result = _per_split(query, gallery, q, g, rerank=False)
    expected = []
    for split in range(3):
        qm = torch.from_numpy(np.flatnonzero(query[TEST_SPLIT].to_numpy() == split))
        gm = torch.from_numpy(np.flatnonzero(gallery[TEST_SPLIT].to_numpy() == split))
        expected.append(
            rank_metrics(
                query_features=q[qm],
                gallery_features=g[gm],
                q_pids=query.pid.to_numpy()[qm],
                g_pids=gallery.pid.to_numpy()[gm],
                q_cams=query.camera.to_numpy()[qm],
                g_cams=gallery.camera.to_numpy()[gm],
            )["mAP"]
        )
    assert result["mAP"] == pytest.approx(np.mean(expected))
    assert [s["mAP"] for s in result["splits"]] == pytest.approx(expected)
    whole = rank_metrics(
        query_features=q,
        gallery_features=g,
        q_pids=query.pid,
        g_pids=gallery.pid,
        q_cams=query.camera,
        g_cams=gallery.camera,
    )["mAP"]
    assert result["mAP"] != pytest.approx(whole), "splits were scored against one gallery"


def test_combine_all_sources_train_on_every_labelled_image(trees, tmp_path: Path) -> None:
    market = build_market_tree(tmp_path / "market")
    sources = [
        Domain("market", "market1501", market, label=0, combine_all=True),
        Domain("sysu", "cuhksysu", trees["cuhksysu"], label=1),
    ]
    summary = pool_sources(sources, tmp_path, tmp_path / "ics", verify="none")
    train = pd.read_parquet(tmp_path / "ics" / "train.parquet")
    raw = load_dataset(market, "market1501")
    labelled = sum(int((t["pid"] > 0).sum()) for t in (raw.train, raw.query, raw.gallery))
    assert summary["domains"]["market"]["train_images"] == labelled
    assert summary["domains"]["sysu"]["train_images"] == 10
    assert pd.read_parquet(tmp_path / "ics" / "query.parquet").empty
    assert set(train["domain"]) == {0, 1}


def _protocol_config(tmp_path: Path, **domains) -> dict:
    entries = {
        "m": {"format": "market1501", "root": str(tmp_path)},
        "s": {"format": "cuhksysu", "root": str(tmp_path)},
        **domains,
    }
    return validate(
        {
            "dataset": {"name": "p", "format": "pooled", "root": str(tmp_path)},
            "dg": {"sources": ["m", "s"], "targets": ["t"], "domains": entries},
        }
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": "market1501", "split": 2}, "dg.domains.t.split: applies to prid"),
        ({"format": "prid", "split": "first"}, "dg.domains.t.split: 'first' is neither"),
        ({"format": "cuhksysu"}, "dg.domains.t: a cuhksysu dataset has no query and gallery"),
    ],
)
def test_protocol_keys_misused_are_one_line_errors(tmp_path: Path, entry, message) -> None:
    config = _protocol_config(tmp_path, t={"root": str(tmp_path), **entry})
    problems = config_problems(config)
    assert any(message in p for p in problems), problems


def test_a_split_based_source_needs_a_split_or_combine_all(trees, tmp_path: Path) -> None:
    sources = [
        Domain("v", "viper", trees["viper"], label=0),
        Domain("s", "cuhksysu", trees["cuhksysu"], label=1),
    ]
    with pytest.raises(DatasetError, match=r"dg.domains.v.split: a viper source trains on one"):
        pool_sources(sources, tmp_path, tmp_path / "ics", verify="none")


def protocol_roots(data: Path) -> dict[str, dict]:
    """dg.domains overrides pointing every dataset of the protocol configs at a fixture."""
    from conftest import build_msmt_tree

    roots = {fmt: build(data / fmt) for fmt, build in BUILDERS.items()}
    roots["market1501"] = build_market_tree(data / "market1501")
    roots["msmt17"] = build_msmt_tree(data / "msmt17")
    names = {"cuhk03": "cuhk03np"}
    domains = ("market1501", "msmt17", "cuhk02", "cuhk03", "cuhksysu", "prid", "grid", "viper")
    return {d: {"root": str(roots[names.get(d, d)])} for d in (*domains, "ilids")}


@pytest.mark.parametrize(
    ("configs", "targets"),
    [
        (["dg-protocol1.yaml"], ["prid", "grid", "viper", "ilids"]),
        (["dg-protocol2.yaml"], ["cuhk03"]),
        (["dg-protocol2.yaml", "dg-protocol3.yaml"], ["cuhk03"]),
    ],
)
def test_protocol_configs_plan_every_target_with_vit_b16(tmp_path: Path, configs, targets) -> None:
    """The Protocol 1-3 configs on fixtures in the real layouts: every target's tables and
    every row's evaluation on it are planned, with CLIP-FGDI's ViT-B/16 at 224x224."""
    import json
    import re

    from conftest import REPO, snakemake_dry_run

    domains = protocol_roots(tmp_path / "data")
    weights = tmp_path / "ViT-B-16.pt"  # planned, not read: a dry run opens no weights
    weights.write_bytes(b"")
    out = snakemake_dry_run(
        tmp_path,
        *(str(REPO / "config" / c) for c in configs[1:]),
        "--config",
        f"dataset={json.dumps({'root': str(tmp_path / 'data')})}",
        f"dg={json.dumps({'domains': domains})}",
        f"clip={json.dumps({'pretrained': str(weights)})}",
        target="dg",
        configfile=REPO / "config" / configs[0],
    )
    for target in targets:
        assert re.search(rf"dg-target .*--target {target} ", out), out[-3000:]
        for variant in ("order7", "supervised", "fgdi", "fgdi-code"):
            assert f"ablation/{variant}-s0/eval/targets/{target}/metrics.json" in out
    # CLIP-FGDI's prior stage and the prompts learnt on it: one per seed, shared by its two
    # guiding-loss signs.
    priors = re.findall(r" prior --set .* --out-dir (\S+)", out)
    assert priors and all(re.search(r"/ablation/fgdi-s\d+/prior$", p) for p in priors), priors
    prompts = re.findall(r" prompt --set .* --out-dir (\S+)", out)
    assert not [p for p in prompts if "fgdi-code" in p], prompts
    for line in out.splitlines():
        if " intra --set " in line and "/fgdi" in line:
            assert re.search(r"--clip \S+/ablation/fgdi-s\d+/prior/clip.pt", line), line
        elif " intra --set " in line:
            assert "prior/clip.pt" not in line
    ics = next(line for line in out.splitlines() if " ics --set " in line)
    assert '"model": "ViT-B-16"' in out and '"height": 224, "width": 224' in out
    combined = '"combine_all": true' in ics
    assert combined == (configs != ["dg-protocol2.yaml"])
