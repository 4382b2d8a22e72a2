"""Market-1501-protocol metrics against hand-worked cases and a plain per-query reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ccafl import evaluation
from ccafl.evaluation import cmc_at, default_chunk_size, rank_metrics

# Hand-worked example: 2 queries, 6 gallery images.
#
#   query 0: pid 1, camera 0          query 1: pid 2, camera 1
#
#   gallery  pid  cam  dist to q0   role for query 0
#   g0        0    1     0.10       distractor (pid 0): stays, a negative, ranked first
#   g1        1    0     0.05       same pid AND camera as q0: removed (would be rank 1)
#   g2        1    1     0.30       true match
#   g3       -1    2     0.20       junk: removed
#   g4        2    1     0.40       negative
#   g5        1    2     0.60       true match
#
# Query 0, valid ranking: g0 (neg), g2 (MATCH), g4 (neg), g5 (MATCH).
#   True matches at ranks 2 and 4.
#   AP  = (1/2 + 2/4) / 2 = 0.5          (precision at each true match, averaged)
#   INP = 2 matches / rank 4 of hardest  = 0.5
#   CMC = [0, 1, 1, ...]                 (first true match at rank 2)
#   Had junk g3 counted as a negative, g2 would sit at rank 3 (AP = (1/3 + 2/5)/2);
#   had g1 counted as a match, rank 1 would be a hit: both mistakes change the numbers.
# Query 1 (pid 2, camera 1): its only gallery image of pid 2 is g4, same camera -> removed,
#   no valid match: skipped and counted.
# Totals: mAP = 0.5, mINP = 0.5, rank-1 = 0, rank-2.. = 1, 1 valid query, 1 skipped.
HAND_Q_PIDS = np.array([1, 2])
HAND_Q_CAMS = np.array([0, 1])
HAND_G_PIDS = np.array([0, 1, 1, -1, 2, 1])
HAND_G_CAMS = np.array([1, 0, 1, 2, 1, 2])
HAND_DISTMAT = np.array(
    [
        [0.10, 0.05, 0.30, 0.20, 0.40, 0.60],
        [0.50, 0.40, 0.30, 0.20, 0.10, 0.60],
    ]
)


def hand_labels() -> dict:
    return {
        "q_pids": HAND_Q_PIDS,
        "g_pids": HAND_G_PIDS,
        "q_cams": HAND_Q_CAMS,
        "g_cams": HAND_G_CAMS,
    }


def reference_metrics(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    max_rank: int,
) -> dict:
    """One query at a time, straight from the definitions; ties put negatives first."""
    aps, inps, cmcs = [], [], []
    skipped = 0
    for i in range(len(q_pids)):
        same_view = (g_pids == q_pids[i]) & (g_cams == q_cams[i])
        keep = ~same_view & (g_pids != -1)
        dist = distmat[i][keep]
        match = g_pids[keep] == q_pids[i]
        if not match.any():
            skipped += 1
            continue
        order = np.lexsort((match, dist))  # by distance, then negatives before matches
        match_ranks = np.flatnonzero(match[order]) + 1
        aps.append(np.mean(np.arange(1, len(match_ranks) + 1) / match_ranks))
        inps.append(len(match_ranks) / match_ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[match_ranks[0] - 1 :] = 1.0
        cmcs.append(cmc)
    return {
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "cmc": np.mean(cmcs, axis=0),
        "n_valid_queries": len(aps),
        "n_skipped_queries": skipped,
    }


def random_retrieval(
    seed: int, n_query: int = 37, n_gallery: int = 211, dim: int = 16
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clustered features with junk, distractors and several cameras."""
    rng = np.random.default_rng(seed)
    n_ids, n_cams = 12, 4
    centres = rng.standard_normal((n_ids, dim))
    q_pids = rng.integers(1, n_ids, n_query)
    g_pids = rng.integers(-1, n_ids, n_gallery)  # -1 junk, 0 distractor
    q_feats = centres[q_pids] + 0.9 * rng.standard_normal((n_query, dim))
    g_feats = centres[np.maximum(g_pids, 0)] + 0.9 * rng.standard_normal((n_gallery, dim))
    labels = {
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_cams": rng.integers(0, n_cams, n_query),
        "g_cams": rng.integers(0, n_cams, n_gallery),
    }
    return q_feats.astype(np.float32), g_feats.astype(np.float32), labels


def cosine_distmat(q_feats: np.ndarray, g_feats: np.ndarray) -> np.ndarray:
    q = q_feats.astype(np.float64)
    g = g_feats.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return 1.0 - q @ g.T


def assert_same_metrics(actual: dict, expected: dict) -> None:
    assert actual["n_valid_queries"] == expected["n_valid_queries"]
    assert actual["n_skipped_queries"] == expected["n_skipped_queries"]
    assert actual["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert actual["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    np.testing.assert_allclose(actual["cmc"], expected["cmc"], atol=1e-12)


def test_hand_worked_example() -> None:
    metrics = rank_metrics(HAND_DISTMAT, **hand_labels(), max_rank=6, device="cpu")
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["mINP"] == pytest.approx(0.5)
    np.testing.assert_allclose(metrics["cmc"], [0, 1, 1, 1, 1, 1])
    assert metrics["n_valid_queries"] == 1
    assert metrics["n_skipped_queries"] == 1
    assert cmc_at(metrics, (1, 2, 5)) == {"rank1": 0.0, "rank2": 1.0, "rank5": 1.0}


def test_hand_worked_example_matches_reference_and_every_chunk_size() -> None:
    expected = reference_metrics(HAND_DISTMAT, *hand_labels().values(), max_rank=6)
    for chunk_size in (1, 2, 5):
        metrics = rank_metrics(HAND_DISTMAT, **hand_labels(), max_rank=6, chunk_size=chunk_size)
        assert_same_metrics(metrics, expected)


def test_cmc_has_max_rank_entries_even_beyond_gallery_size() -> None:
    metrics = rank_metrics(HAND_DISTMAT, **hand_labels(), max_rank=50)
    assert metrics["cmc"].shape == (50,)
    assert metrics["cmc"].dtype == np.float64
    assert cmc_at(metrics) == {"rank1": 0.0, "rank5": 1.0, "rank10": 1.0}
    with pytest.raises(ValueError, match="outside"):
        cmc_at(metrics, (51,))


def test_ties_rank_negatives_first() -> None:
    # Query pid 1 cam 0; the match (cam 1) ties with a negative at 0.2: the negative goes first,
    # so the match is at rank 2 (AP 1/2); collapsed features never score well by luck.
    metrics = rank_metrics(
        np.array([[0.2, 0.2, 0.9]]),
        q_pids=[1],
        q_cams=[0],
        g_pids=[1, 2, 3],
        g_cams=[1, 1, 1],
        max_rank=3,
    )
    assert metrics["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(metrics["cmc"], [0, 1, 1])
    collapsed = rank_metrics(
        query_features=np.ones((1, 4)),
        gallery_features=np.ones((3, 4)),
        q_pids=[1],
        q_cams=[0],
        g_pids=[2, 3, 1],
        g_cams=[1, 1, 1],
        max_rank=3,
    )
    assert collapsed["mAP"] == pytest.approx(1 / 3)
    assert collapsed["mINP"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_query_reference_on_random_data(seed: int) -> None:
    q_feats, g_feats, labels = random_retrieval(seed)
    distmat = cosine_distmat(q_feats, g_feats)
    expected = reference_metrics(distmat, *labels.values(), max_rank=20)
    assert expected["n_skipped_queries"] + expected["n_valid_queries"] == len(q_feats)
    assert_same_metrics(rank_metrics(distmat, **labels, max_rank=20, chunk_size=8), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_reference_agreement_with_many_ties_and_negative_distances(dtype: type) -> None:
    rng = np.random.default_rng(5)
    _, _, labels = random_retrieval(5, n_query=40, n_gallery=150)
    distmat = (rng.integers(0, 7, (40, 150)) * 0.5 - 1.5).astype(dtype)  # heavy ties, +-0.0
    distmat[distmat == 0] = np.where(rng.random((distmat == 0).sum()) < 0.5, -0.0, 0.0)
    expected = reference_metrics(distmat, *labels.values(), max_rank=10)
    assert_same_metrics(rank_metrics(distmat, **labels, max_rank=10, chunk_size=7), expected)


@pytest.mark.parametrize("chunk_size", [1, 6, 11, 64])
def test_feature_stream_equals_distmat_path(chunk_size: int) -> None:
    q_feats, g_feats, labels = random_retrieval(3, n_query=37)  # 37 not divisible by 6 or 11
    from_distmat = rank_metrics(cosine_distmat(q_feats, g_feats), **labels, max_rank=15)
    from_features = rank_metrics(
        query_features=q_feats,
        gallery_features=g_feats,
        **labels,
        max_rank=15,
        chunk_size=chunk_size,
        device="cpu",
    )
    assert_same_metrics(from_features, from_distmat)


def test_torch_only_path_equals_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The torch matmul and torch.sort branches are what runs on a GPU; run them on CPU here.
    q_feats, g_feats, labels = random_retrieval(6, n_query=37)
    kwargs = {"query_features": q_feats, "gallery_features": g_feats, **labels, "chunk_size": 10}
    with_numpy = rank_metrics(**kwargs, device="cpu")
    monkeypatch.setattr(evaluation, "_NUMPY_ON_CPU", False)
    assert_same_metrics(rank_metrics(**kwargs, device="cpu"), with_numpy)


def test_features_are_cosine_ranked_and_inputs_left_untouched() -> None:
    q_feats, g_feats, labels = random_retrieval(4)
    q_before, g_before = q_feats.copy(), g_feats.copy()
    plain = rank_metrics(query_features=q_feats, gallery_features=g_feats, **labels)
    np.testing.assert_array_equal(q_feats, q_before)
    np.testing.assert_array_equal(g_feats, g_before)
    scales = np.random.default_rng(0).uniform(0.1, 10.0, (len(g_feats), 1)).astype(np.float32)
    rescaled = rank_metrics(
        query_features=torch.from_numpy(3.0 * q_feats),
        gallery_features=torch.from_numpy(g_feats * scales),
        **{key: torch.from_numpy(value) for key, value in labels.items()},
    )
    assert_same_metrics(rescaled, plain)


def test_read_only_inputs_are_accepted_without_warnings() -> None:
    q_feats, g_feats, labels = random_retrieval(8)
    for array in (q_feats, g_feats, *labels.values()):
        array.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_features = rank_metrics(query_features=q_feats, gallery_features=g_feats, **labels)
        distmat = cosine_distmat(q_feats, g_feats)
        distmat.setflags(write=False)
        assert_same_metrics(rank_metrics(distmat, **labels), from_features)


def test_no_valid_query_and_bad_input_raise() -> None:
    with pytest.raises(ValueError, match="no query has a true match"):
        rank_metrics(HAND_DISTMAT[1:], **{**hand_labels(), "q_pids": [2], "q_cams": [1]})
    with pytest.raises(ValueError, match="either"):
        rank_metrics(**hand_labels())
    with pytest.raises(ValueError, match="shape"):
        rank_metrics(HAND_DISTMAT[:, :5], **hand_labels())
    with pytest.raises(ValueError, match="finite"):
        rank_metrics(np.full((2, 6), np.nan), **hand_labels())
    features = np.ones((6, 4))
    features[3, 1] = np.inf
    for q_feats, g_feats in [(features[:2], features), (features[2:4], features[:1].repeat(6, 0))]:
        with pytest.raises(ValueError, match="finite"):
            rank_metrics(query_features=q_feats, gallery_features=g_feats, **hand_labels())


def test_default_chunk_size_bounds_msmt17_memory() -> None:
    n_gallery = 82_161
    chunk = default_chunk_size(n_gallery)
    assert 64 <= chunk <= 1024
    assert chunk * n_gallery * 16 <= 1 * 2**30  # chunk working set, well under 4 GiB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu() -> None:
    q_feats, g_feats, labels = random_retrieval(7, n_query=37)
    kwargs = {"query_features": q_feats, "gallery_features": g_feats, **labels, "chunk_size": 10}
    assert_same_metrics(rank_metrics(**kwargs, device="cuda"), rank_metrics(**kwargs, device="cpu"))


def test_non_contiguous_distmat_tensor() -> None:
    strided = torch.from_numpy(np.repeat(HAND_DISTMAT, 2, axis=1))[:, ::2]  # every other column
    assert not strided.is_contiguous()
    expected = rank_metrics(HAND_DISTMAT, **hand_labels(), max_rank=6)
    assert_same_metrics(rank_metrics(strided, **hand_labels(), max_rank=6), expected)


def test_bfloat16_distmat_tensor_ranks_like_float32() -> None:
    _, _, labels = random_retrieval(9, n_query=20, n_gallery=80)
    distmat = torch.rand(20, 80).to(torch.bfloat16)  # many ties at bfloat16 precision
    expected = rank_metrics(distmat.to(torch.float32), **labels, max_rank=10)
    assert_same_metrics(rank_metrics(distmat, **labels, max_rank=10), expected)


@pytest.mark.parametrize("numpy_on_cpu", [True, False])
def test_euclidean_distance_ranks_the_features_as_they_are(monkeypatch, numpy_on_cpu) -> None:
    """eval.distance: euclidean (CLIP-FGDI's test, feat_norm off) equals ranking the squared
    Euclidean distance matrix, and differs from cosine once the norms differ."""
    monkeypatch.setattr(evaluation, "_NUMPY_ON_CPU", numpy_on_cpu)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((9, 6)) * rng.uniform(0.2, 5.0, (9, 1))
    g = rng.standard_normal((40, 6)) * rng.uniform(0.2, 5.0, (40, 1))
    q, g = q.astype(np.float32), g.astype(np.float32)
    labels = dict(
        q_pids=rng.integers(1, 4, 9),
        g_pids=rng.integers(1, 4, 40),
        q_cams=rng.integers(0, 2, 9),
        g_cams=rng.integers(0, 3, 40),
        device="cpu",
    )
    squared = ((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=-1)
    expected = rank_metrics(squared, **labels)
    got = rank_metrics(
        query_features=q, gallery_features=g, distance="euclidean", chunk_size=4, **labels
    )
    assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    np.testing.assert_array_equal(got["cmc"], expected["cmc"])
    cosine = rank_metrics(query_features=q, gallery_features=g, **labels)
    assert cosine["mAP"] != pytest.approx(got["mAP"], abs=1e-6)
    with pytest.raises(ValueError, match="distance must be one of"):
        rank_metrics(query_features=q, gallery_features=g, distance="l1", **labels)
