"""Using a trained model: embed, index, search and contact sheets (issue 13).

The ranking logic is checked against brute force on synthetic vectors; the commands run on a
random-weight tiny CLIP and a Market-1501-named fixture tree. The consistency with `evaluate`
on a trained model is in tests/e2e/test_pipeline.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_market_tree, tiny_config

from ccafl import search_cli
from ccafl.cli import main
from ccafl.data.datasets import DatasetError
from ccafl.embedding import (
    camera_and_pid_from_name,
    list_images,
    read_embeddings,
)
from ccafl.gallery_index import (
    EXACT_UP_TO,
    INDEX_KINDS,
    GalleryIndex,
    build_index,
    choose_kind,
)
from ccafl.person_search import PROTOCOLS, exclusion, query_table, rank_gallery
from ccafl.reranking import k_reciprocal_rerank
from ccafl.settings import Settings


def clustered_vectors(n: int, dim: int, seed: int = 0, per_person: int = 8) -> np.ndarray:
    """Unit vectors in groups ("people") of ``per_person`` noisy views around a centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // per_person), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def views_of(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """New noisy views of random rows: queries of people the gallery holds."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), n)]
    views = picked + 0.1 * rng.standard_normal(picked.shape).astype(np.float32)
    return views / np.linalg.norm(views, axis=1, keepdims=True)


def gallery_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "path": [f"g{i}.jpg" for i in range(n)],
            "camera": [f"c{c}" for c in rng.integers(1, 4, n)],
            "pid": rng.integers(-1, 6, n),
        }
    )


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int, mask=None) -> np.ndarray:
    scores = queries @ gallery.T
    out = []
    for row, s in enumerate(scores):
        order = np.argsort(-s, kind="stable")
        if mask is not None:
            order = order[mask(row, order)]
        out.append(order[:k])
    return np.array(out)


# --------------------------------------------------------------------------- naming, listing


def test_cli_constants_match_the_modules() -> None:
    assert search_cli.INDEX_KINDS == INDEX_KINDS
    assert search_cli.EXACT_UP_TO == EXACT_UP_TO
    assert search_cli.PROTOCOLS == PROTOCOLS


def test_camera_and_pid_from_the_dataset_namings() -> None:
    assert camera_and_pid_from_name("q/0002_c3s1_000451_03.jpg") == ("c3", 2)
    assert camera_and_pid_from_name("-1_c1s1_000008_00.jpg") == ("c1", -1)
    assert camera_and_pid_from_name("0001_c2_f0046182.jpg") == ("c2", 1)
    assert camera_and_pid_from_name("0001_002_05_0303morning_0015_0.jpg") == ("c5", 1)
    assert camera_and_pid_from_name("holiday.jpg") is None


def test_list_images_of_a_folder_reads_cameras_and_pids(tmp_path: Path) -> None:
    root = build_market_tree(tmp_path / "market")
    table, base = list_images(root / "bounding_box_test")
    assert base == (root / "bounding_box_test").resolve()
    assert len(table) == 6 and set(table["camera"]) == {"c1", "c2", "c3"}
    assert sorted(table["pid"]) == [-1, 0, 20, 20, 21, 21]


def test_list_images_rejects_unnamed_files_with_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "mine" / "entrance"
    folder.mkdir(parents=True)
    shutil.copy(build_market_tree(tmp_path / "m") / "query" / "0020_c1s1_000001_01.jpg", folder)
    (folder / "holiday.jpg").write_bytes((folder / "0020_c1s1_000001_01.jpg").read_bytes())
    with pytest.raises(DatasetError, match="holiday.jpg.*manifest.*--camera-from folder"):
        list_images(tmp_path / "mine")
    table, _ = list_images(tmp_path / "mine", camera_from="folder")
    assert set(table["camera"]) == {"entrance"} and "pid" not in table.columns


def test_list_images_of_a_manifest(tmp_path: Path) -> None:
    root = build_market_tree(tmp_path / "market")
    pd.DataFrame(
        {"path": ["query/0020_c1s1_000001_01.jpg"], "camera": ["hall"], "pid": [7]}
    ).to_csv(root / "m.csv", index=False)
    table, base = list_images(root / "m.csv")
    assert base == root.resolve()
    assert table.to_dict("records") == [
        {"path": "query/0020_c1s1_000001_01.jpg", "camera": "hall", "pid": 7}
    ]
    pd.DataFrame({"file": ["x.jpg"]}).to_csv(root / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="bad.csv has no 'path' column"):
        list_images(root / "bad.csv")


# --------------------------------------------------------------------------- index and search


def test_auto_kind_is_exact_up_to_the_threshold() -> None:
    assert choose_kind(EXACT_UP_TO) == "flat"
    assert choose_kind(EXACT_UP_TO + 1) == "ivf"
    assert choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ValueError, match="index kind"):
        choose_kind(10, "lsh")


def test_flat_index_is_exact_and_approximate_kinds_recall() -> None:
    gallery = clustered_vectors(3000, 32)
    queries = views_of(gallery, 50)
    truth = brute_force(queries, gallery, 10)
    flat = GalleryIndex(build_index(gallery)[0], gallery_rows(3000))
    _, ids = flat.search(queries, 10)
    np.testing.assert_array_equal(ids, truth)
    for kind in ("ivf", "hnsw"):
        index, params = build_index(gallery, kind)
        assert params["kind"] == kind
        _, ids = GalleryIndex(index, gallery_rows(3000)).search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
        assert recall > 0.8, (kind, recall)  # a broken index scores ~0
    index, params = build_index(gallery, exact_up_to=1000)  # auto beyond the threshold
    assert params["kind"] == "ivf" and params["nlist"] == round(np.sqrt(3000))


def test_saved_index_loads_with_its_parameters(tmp_path: Path) -> None:
    gallery = clustered_vectors(800, 16)
    rows = gallery_rows(800)
    index, params = build_index(gallery, "ivf", nprobe=3)
    GalleryIndex(index, rows, params).save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.index.nprobe == 3 and loaded.info["kind"] == "ivf"
    pd.testing.assert_frame_equal(loaded.rows, rows)
    np.testing.assert_allclose(loaded.vectors(np.array([5, 0])), gallery[[5, 0]], atol=1e-6)
    with pytest.raises(DatasetError, match="no search index"):
        GalleryIndex.load(tmp_path)


def test_exclusions_match_brute_force() -> None:
    gallery, rows = clustered_vectors(400, 16), gallery_rows(400)
    queries = pd.DataFrame(
        {"path": ["q0", "q1", "q2"], "camera": ["c1", "c2", "c3"], "pid": [1, 2, 3]}
    )
    q_feats = gallery[[3, 10, 20]] + 0.01
    q_feats /= np.linalg.norm(q_feats, axis=1, keepdims=True)
    index = GalleryIndex(build_index(gallery)[0], rows)
    cams, pids = rows["camera"].to_numpy(), rows["pid"].to_numpy()
    for other, protocol in [(True, "none"), (False, "market1501"), (True, "market1501")]:
        allowed = exclusion(rows, queries, other_cameras_only=other, protocol=protocol)
        _, ids = index.search(q_feats, 30, allowed)
        assert (ids >= 0).all()
        np.testing.assert_array_equal(ids, brute_force(q_feats, gallery, 30, allowed))
        for q, row in enumerate(ids):
            same_cam = cams[row] == queries["camera"][q]
            if other:
                assert not same_cam.any()
            if protocol == "market1501":
                assert not (same_cam & (pids[row] == queries["pid"][q])).any()
                assert (pids[row] != -1).all()
    assert exclusion(rows, queries) is None
    unknown = queries.assign(camera=None)
    with pytest.raises(DatasetError, match="camera of query q0 is unknown"):
        exclusion(rows, unknown, other_cameras_only=True)


def test_rerank_over_the_whole_gallery_is_the_reranking_module() -> None:
    gallery, rows = clustered_vectors(120, 16, per_person=4), gallery_rows(120)
    q_feats = clustered_vectors(6, 16, seed=5, per_person=4)
    queries = query_table([f"{p:04d}_c1s1_000001_01.jpg" for p in range(6)])
    index = GalleryIndex(build_index(gallery)[0], rows)
    table = rank_gallery(
        index, q_feats, queries, top_k=15, protocol="market1501", rerank=True, rerank_depth=120
    )
    distance = k_reciprocal_rerank(q_feats, gallery)
    allowed = exclusion(rows, queries, protocol="market1501")
    for q, (_, hits) in enumerate(table.groupby("query", sort=False)):
        order = np.argsort(distance[q], kind="stable")
        expected = order[allowed(q, order)][:15]
        assert hits["path"].tolist() == [f"g{i}.jpg" for i in expected]
        np.testing.assert_allclose(hits["rerank_distance"], distance[q, expected], rtol=1e-6)
        np.testing.assert_allclose(hits["score"], gallery[expected] @ q_feats[q], rtol=1e-5)


def test_ranking_table_columns_and_match_flag() -> None:
    gallery, rows = clustered_vectors(50, 8), gallery_rows(50)
    queries = query_table(["0003_c2s1_000001_01.jpg", "photo.jpg"], camera=None)
    assert queries["camera"][0] == "c2" and pd.isna(queries["camera"][1])
    index = GalleryIndex(build_index(gallery)[0], rows)
    table = rank_gallery(index, gallery[[0, 1]], queries, top_k=4)
    assert list(table.columns) == [
        "query", "query_camera", "query_pid", "rank", "path", "camera", "pid", "score", "match"
    ]  # fmt: skip
    assert table["rank"].tolist() == [1, 2, 3, 4] * 2
    first = table[table["query"] == "0003_c2s1_000001_01.jpg"]
    assert (first["match"] == (first["pid"] == 3)).all()
    assert not table.loc[table["query"] == "photo.jpg", "match"].any()


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny CLIP ReID model saved as the final rule saves one."""
    from ccafl.io import save_torch
    from ccafl.models.factory import build_reid_model, final_model_payload

    folder = tmp_path_factory.mktemp("model")
    config = tiny_config(folder, clip={"pretrained": None})
    torch.manual_seed(0)
    model = build_reid_model(Settings.from_config(config), weights=False)
    model.bottleneck.running_mean.normal_(0, 0.1)
    model.bottleneck.running_var.uniform_(0.5, 2.0)
    save_torch(
        final_model_payload(model, Settings.from_config(config), epoch=0), folder / "model.pt"
    )
    return folder / "model.pt"


def ccafl(*args: str | Path) -> int:
    return main([str(a) for a in args])


def test_embed_writes_normalised_features_with_the_model_digest(
    tmp_path: Path, tiny_model: Path
) -> None:
    from ccafl.inference.features import extract_features
    from ccafl.inference.models import load_reid_model

    root = build_market_tree(tmp_path / "market")
    out = tmp_path / "gallery.parquet"
    assert (
        ccafl("embed", "--model", tiny_model, "--images", root / "bounding_box_test", "--out", out)
        == 0
    )
    table = read_embeddings(out)
    meta = table.metadata
    assert meta["model_sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert meta["feature_name"] == "pooled" and meta["feature_dim"] == table.features.shape[1]
    np.testing.assert_allclose(np.linalg.norm(table.features, axis=1), 1.0, rtol=1e-5)
    model = load_reid_model(tiny_model)
    direct = extract_features(
        model, root / "bounding_box_test", table.rows["path"].tolist(), (64, 32)
    )
    direct = torch.nn.functional.normalize(direct, dim=1).numpy()
    np.testing.assert_allclose(table.features, direct, atol=1e-6)
    assert set(table.rows.columns) == {"path", "camera", "pid"}


def test_bad_inputs_are_one_line_errors(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        ccafl(
            "embed",
            "--model",
            tmp_path / "nope.pt",
            "--images",
            tmp_path,
            "--out",
            tmp_path / "x.parquet",
        )
        == 2
    )
    assert "model file not found" in capsys.readouterr().err
    assert (
        ccafl(
            "embed",
            "--model",
            tiny_model,
            "--images",
            tmp_path / "none",
            "--out",
            tmp_path / "x.parquet",
        )
        == 2
    )
    assert "images not found" in capsys.readouterr().err
    assert ccafl("search", "--index", tmp_path, "--query", tmp_path) == 2
    assert "no search index" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_search_command_end_to_end_on_a_fixture_tree(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture
) -> None:
    root = build_market_tree(tmp_path / "market")
    features, index_dir, out = tmp_path / "g.parquet", tmp_path / "idx", tmp_path / "res"
    assert (
        ccafl(
            "embed",
            "--model",
            tiny_model,
            "--images",
            root / "bounding_box_test",
            "--out",
            features,
        )
        == 0
    )
    assert ccafl("index", "--features", features, "--out", index_dir) == 0
    assert ccafl(
        "search", "--index", index_dir, "--query", root / "query", "--top-k", "3",
        "--other-cameras-only", "--out", out,
    ) == 0  # fmt: skip
    ranking = pd.read_csv(out / "ranking.csv")
    # The c1 query has only 2 gallery images in other cameras, the c2 query 5 (top 3 kept).
    assert (ranking["camera"] != ranking["query_camera"]).all()
    assert ranking.groupby("query_camera").size().to_dict() == {"c1": 2, "c2": 3}
    assert (out / "contact_sheet.png").stat().st_size > 0
    page = (out / "contact_sheet.html").read_text()
    assert page.count("<img ") == 2 + 5 and "data:image/png;base64," in page
    # Another model's features live in another space: refused, naming the fix.
    other = tmp_path / "other.pt"
    payload = torch.load(tiny_model, weights_only=False)
    payload["epoch"] = 1
    torch.save(payload, other)
    capsys.readouterr()
    assert ccafl("search", "--index", index_dir, "--query", root / "query", "--model", other) == 2
    assert "not the model that made" in capsys.readouterr().err


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [browser, *flags, *args], capture_output=True, text=True, timeout=120, env=os.environ
    )


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium/Chrome installed (apt-get install chromium)"
)
def test_contact_sheet_opens_in_a_headless_browser(tmp_path: Path) -> None:
    from PIL import Image

    from ccafl.contact_sheet import write_contact_sheet_html

    root = build_market_tree(tmp_path / "market")
    gallery = sorted((root / "bounding_box_test").glob("*.jpg"))
    queries = sorted((root / "query").glob("*.jpg"))
    ranking = pd.DataFrame(
        [
            {
                "query": str(q), "query_camera": "c1", "rank": r + 1, "path": g.name,
                "camera": "c2", "score": 0.9 - 0.1 * r, "match": r == 0,
            }
            for q in queries
            for r, g in enumerate(gallery[:4])
        ]
    )  # fmt: skip
    page = write_contact_sheet_html(
        ranking, tmp_path / "sheet" / "page.html", root / "bounding_box_test"
    )
    expected = len(queries) * 5
    browser = _chromium()
    dom = _run_chromium(
        browser, tmp_path / "p1", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-images-shown="{expected}"' in dom.stdout  # decoded by the browser
    assert dom.stdout.count('data-path="') == expected
    for q in queries:
        assert f'data-query="{q}"' in dom.stdout
    shot = tmp_path / "shot.png"
    result = _run_chromium(
        browser, tmp_path / "p2", "--window-size=900,700", f"--screenshot={shot}", page.as_uri()
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (700, 900, 3)
    # The thumbnails' frames are drawn: green (match) and blue (query) pixels are on screen.
    assert ((pixels == [40, 170, 60]).all(axis=2)).sum() > 100
    assert ((pixels == [40, 96, 220]).all(axis=2)).sum() > 100
