"""The embedded synthetic benchmark: layout, split guarantees, captions, determinism, bias."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ccafl.data.synthetic import (
    ATTRIBUTE_COLUMNS,
    SyntheticSpec,
    camera_bias_diagnostic,
    synthesize,
)

MARKET = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_00\.jpg$")
FOLDERS = ("bounding_box_train", "query", "bounding_box_test", "pretrain")
SMALL = SyntheticSpec(
    seed=3, n_train_ids=6, n_test_ids=8, n_pretrain_ids=4, n_distractors=5, n_junk=3
)


def _images(root: Path, folder: str) -> list[tuple[str, int, int]]:
    """(name, pid, 1-based camera) of every file in a split folder; names must parse."""
    out = []
    for path in sorted((root / folder).iterdir()):
        match = MARKET.match(path.name)
        assert match, f"bad name {folder}/{path.name}"
        out.append((path.name, int(match.group(1)), int(match.group(2))))
    return out


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "small"
    summary = synthesize(root, SMALL, progress=False)
    assert summary["images"]["train"] > 0 and summary["seconds"] >= 0
    return root


def test_layout_and_naming(small_root: Path) -> None:
    for folder in FOLDERS:
        assert (small_root / folder).is_dir()
        assert _images(small_root, folder)
    assert (small_root / "captions.parquet").is_file()
    spec = json.loads((small_root / "spec.json").read_text())
    assert SyntheticSpec.from_config(spec) == SMALL
    assert not list(small_root.parent.glob("small.tmp-*")), "temporary dir left behind"
    cams = {cam for folder in FOLDERS[:3] for _, _, cam in _images(small_root, folder)}
    assert cams <= set(range(1, SMALL.n_cameras + 1))
    # Pretraining photos come from no benchmark camera: their names say c0.
    assert {cam for _, _, cam in _images(small_root, "pretrain")} == {0}


def test_identities_span_two_cameras_and_splits_are_disjoint(small_root: Path) -> None:
    train = _images(small_root, "bounding_box_train")
    test = _images(small_root, "query") + _images(small_root, "bounding_box_test")
    pretrain = _images(small_root, "pretrain")
    for images in (train, [t for t in test if t[1] > 0]):
        cams_per_pid: dict[int, set[int]] = {}
        for _, pid, cam in images:
            cams_per_pid.setdefault(pid, set()).add(cam)
        assert all(len(c) >= 2 for c in cams_per_pid.values())
    shots = pd.Series([pid for _, pid, _ in pretrain]).value_counts()
    low, high = SMALL.pretrain_frames
    assert shots.between(low, high).all()
    train_pids = {pid for _, pid, _ in train}
    test_pids = {pid for _, pid, _ in test if pid > 0}
    pretrain_pids = {pid for _, pid, _ in pretrain}
    assert len(train_pids) == SMALL.n_train_ids and len(test_pids) == SMALL.n_test_ids
    assert len(pretrain_pids) == SMALL.n_pretrain_ids
    assert not (train_pids & test_pids) and not (pretrain_pids & (train_pids | test_pids))


def test_queries_have_cross_camera_gallery_match(small_root: Path) -> None:
    query = _images(small_root, "query")
    gallery = _images(small_root, "bounding_box_test")
    assert query and all(pid > 0 for _, pid, _ in query)
    seen = set()
    for _, pid, cam in query:
        assert (pid, cam) not in seen, "one query per (identity, camera)"
        seen.add((pid, cam))
        assert any(g_pid == pid and g_cam != cam for _, g_pid, g_cam in gallery)


def test_distractors_and_junk_in_gallery(small_root: Path) -> None:
    pids = [pid for _, pid, _ in _images(small_root, "bounding_box_test")]
    assert pids.count(0) == SMALL.n_distractors
    assert pids.count(-1) == SMALL.n_junk
    assert any(name.startswith("-1_c") for name, _, _ in _images(small_root, "bounding_box_test"))


def test_captions_cover_every_image(small_root: Path) -> None:
    captions = pd.read_parquet(small_root / "captions.parquet")
    files = {f"{folder}/{name}" for folder in FOLDERS for name, _, _ in _images(small_root, folder)}
    assert len(captions) == len(files) and set(captions["path"]) == files
    assert set(captions["split"]) == {"train", "query", "gallery", "pretrain"}
    for column in ("path", "split", "caption", *ATTRIBUTE_COLUMNS):
        assert column in captions.columns
    people = captions[captions["pid"] > 0]
    assert people["caption"].str.startswith("a photo of").all()
    assert set(people["view"]) <= {"front", "back", "side"}
    assert set(captions.loc[captions["split"] == "pretrain", "camera"]) == {-1}


def test_backpack_hidden_from_the_front(small_root: Path) -> None:
    spec = SyntheticSpec(seed=1, n_train_ids=30, n_test_ids=1, n_pretrain_ids=0)
    root = small_root.parent / "bags"
    synthesize(root, spec, progress=False)
    captions = pd.read_parquet(root / "captions.parquet")
    front = captions[(captions["view"] == "front")]
    assert not front["caption"].str.contains("backpack").any()
    assert captions["caption"].str.contains("backpack").any()


def test_deterministic_bytes(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        seed=7, n_train_ids=3, n_test_ids=3, n_pretrain_ids=2, n_distractors=2, n_junk=2
    )
    synthesize(tmp_path / "a", spec, progress=False)
    synthesize(tmp_path / "b", spec, progress=False)
    digest_a, digest_b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert digest_a == digest_b and len(digest_a) > 10
    # overwriting an existing root replaces it; a stale tmp dir of a dead run is cleaned up
    stale = tmp_path / "a.tmp-999999999"
    (stale / "query").mkdir(parents=True)
    synthesize(tmp_path / "a", spec, progress=False)
    assert _tree_digest(tmp_path / "a") == digest_b
    assert not stale.exists()


def test_camera_bias_gap_and_its_control(tmp_path: Path) -> None:
    gaps = {}
    for strength in (1.0, 0.0):
        spec = SyntheticSpec(
            n_train_ids=1,
            n_test_ids=60,
            n_pretrain_ids=0,
            n_distractors=0,
            n_junk=0,
            shift_strength=strength,
        )
        root = tmp_path / f"s{strength}"
        synthesize(root, spec, progress=False)
        result = camera_bias_diagnostic(root)
        assert result["n_queries"] > 100
        gaps[strength] = result["same_camera_rank1"] - result["cross_camera_rank1"]
    assert gaps[1.0] >= 0.3, gaps
    assert gaps[0.0] <= gaps[1.0] - 0.3, gaps


def test_from_config() -> None:
    spec = SyntheticSpec.from_config({"seed": 2, "cameras_per_id": [2, 3], "shift_strength": 0})
    assert spec.cameras_per_id == (2, 3) and spec.seed == 2 and spec.shift_strength == 0.0
    assert spec.n_train_ids == SyntheticSpec().n_train_ids
    assert SyntheticSpec.from_config({}) == SyntheticSpec()
    with pytest.raises(ValueError, match="n_camera"):
        SyntheticSpec.from_config({"n_camera": 3})
    with pytest.raises(ValueError):
        SyntheticSpec.from_config({"cameras_per_id": [1, 3]})
    # Fewer cameras than the range's top: a person is seen by at most all of them.
    assert SyntheticSpec.from_config({"n_cameras": 3}).cameras_per_id == (2, 3)
    with pytest.raises(ValueError):
        SyntheticSpec.from_config({"n_cameras": 3, "cameras_per_id": [4, 4]})


def test_captions_name_a_few_visible_parts_and_some_are_wrong() -> None:
    """Web-style captions: a subset of what is visible, each named part wrong at the set rate."""
    import numpy as np

    from ccafl.data.synthetic import ATTRIBUTE_CHOICES, web_caption

    rng = np.random.default_rng(0)
    visible = {
        "upper_color": "red",
        "upper_pattern": "solid",
        "lower_color": "blue",
        "shoes": "white",
        "hair": "black",
        "hair_length": "short",
        "skin": "light",
        "bag": "backpack",
        "bag_color": "gray",
        "body": "average",
        "height": "medium",
        "view": "back",
    }
    named, wrong = 0, 0
    for _ in range(2000):
        caption = web_caption(visible, rng, noise=0.2, parts=(2, 3))
        shirt = [c for c in ATTRIBUTE_CHOICES["upper_color"][0] if f" {c} shirt" in caption]
        if shirt:
            named += 1
            wrong += shirt != ["red"]
    assert 0.2 < named / 2000 < 0.7  # the shirt is one of 2-3 parts out of 7
    assert 0.14 < wrong / named < 0.26
    exact = web_caption(visible, rng, noise=0.0, parts=(7, 7))
    assert "red shirt" in exact and "blue trousers" in exact and "gray backpack" in exact


def test_identities_of_one_look_differ_only_in_details() -> None:
    from ccafl.data.synthetic import sample_identities

    people = sample_identities(0, "train", list(range(1, 41)), ids_per_look=4, detail=1.0)
    looks: dict[tuple, list] = {}
    for person in people:
        looks.setdefault(tuple(sorted(person.attrs.items())), []).append(person)
    twins = [group for group in looks.values() if len(group) >= 2]
    assert twins, "a look shared by several identities"
    for group in twins:  # same captioned attributes, different personal details
        details = {
            (round(float(p.colors[3].sum()), 3), p.long_sleeves, p.belt, round(p.waist, 4))
            for p in group
        }
        assert len(details) == len(group)
    plain = sample_identities(0, "train", list(range(1, 41)), ids_per_look=4, detail=0.0)
    assert not any(p.long_sleeves or p.shorts or p.belt or p.collar or p.cap for p in plain)
    assert {round(p.waist, 6) for p in plain} == {0.535}


def test_same_spec_same_bytes_in_another_process(tmp_path: Path) -> None:
    """Nothing may depend on Python's per-process string hashing (set or dict-of-str order)."""
    import os
    import subprocess
    import sys

    spec = SyntheticSpec(
        seed=5, n_train_ids=3, n_test_ids=3, n_pretrain_ids=12, n_distractors=1, n_junk=1
    )
    synthesize(tmp_path / "here", spec, progress=False)
    code = (
        "import sys, json; from ccafl.data.synthetic import SyntheticSpec, synthesize; "
        "synthesize(sys.argv[1], SyntheticSpec.from_config(json.loads(sys.argv[2])), "
        "progress=False)"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = tmp_path / f"there{hash_seed}"
        subprocess.run(
            [sys.executable, "-c", code, str(out), json.dumps(spec.to_dict())],
            check=True,
            env=env,
        )
        assert _tree_digest(out) == _tree_digest(tmp_path / "here"), hash_seed
