"""k-reciprocal re-ranking against a slow reference written from the paper's definitions and
the conventions of the code published with it (the one torchreid and fast-reid carry)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccafl.evaluation import rank_metrics
from ccafl.reranking import k_reciprocal_rerank


def reference_rerank(
    q_feats: np.ndarray, g_feats: np.ndarray, k1: int, k2: int, lambda_value: float
) -> tuple[np.ndarray, int]:
    """Re-ranked distances, one pair and one set at a time, plus how many k1/2 expansions
    were accepted (so a test can check the expansion branch was exercised)."""
    feats = np.concatenate([q_feats, g_feats]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    n, n_query = len(feats), len(q_feats)
    # Squared Euclidean distance, each column divided by its maximum, then transposed.
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = float(np.sum((feats[i] - feats[j]) ** 2))
    dist = (dist / dist.max(axis=0, keepdims=True)).T
    ranking = [list(np.argsort(dist[i], kind="stable")) for i in range(n)]

    def nearest(p: int, k: int) -> list[int]:  # N(p, k): p itself and its k nearest
        return [int(g) for g in ranking[p][: k + 1]]

    def reciprocal(p: int, k: int) -> set[int]:
        return {g for g in nearest(p, k) if p in nearest(g, k)}

    half = round(k1 / 2)  # Python rounds half to even, as numpy.around does
    vectors = np.zeros((n, n))
    expansions = 0
    for p in range(n):
        own = reciprocal(p, k1)
        expanded = set(own)
        for q in own:
            theirs = reciprocal(q, half)
            if len(theirs & own) > 2 / 3 * len(theirs):
                expanded |= theirs
                expansions += 1
        weights = {g: math.exp(-dist[p, g]) for g in expanded}
        total = sum(weights.values())
        for g, weight in weights.items():
            vectors[p, g] = weight / total
    if k2 > 1:
        vectors = np.stack([vectors[ranking[p][:k2]].mean(axis=0) for p in range(n)])
    final = np.zeros((n_query, n - n_query))
    for i in range(n_query):
        for j in range(n - n_query):
            a, b = vectors[i], vectors[n_query + j]
            jaccard = 1.0 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            final[i, j] = (1 - lambda_value) * jaccard + lambda_value * dist[i, n_query + j]
    return final, expansions


def random_features(seed: int, n_query: int, n_gallery: int, dim: int = 16):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n_query, dim)).astype(np.float32),
        rng.standard_normal((n_gallery, dim)).astype(np.float32),
    )


def clustered_features(seed: int, n_ids: int = 12, per_id: int = 8, dim: int = 16):
    """Identities as noisy copies of a centre: reciprocal sets and expansions are common."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    q = centres + 0.4 * rng.standard_normal((n_ids, dim))
    g = np.repeat(centres, per_id, axis=0) + 0.4 * rng.standard_normal((n_ids * per_id, dim))
    return q.astype(np.float32), g.astype(np.float32)


@pytest.mark.parametrize(
    ("data", "k1", "k2"),
    [
        ("random", 20, 6),  # the paper's k1, k2
        ("clustered", 20, 6),
        ("clustered", 7, 3),  # odd k1: N(p, k1/2) has round(3.5) + 1 = 5 entries
        ("clustered", 5, 1),  # round(2.5) = 2 (half to even); k2 = 1: no query expansion
        ("random", 60, 6),  # k1 beyond the number of images (8 + 30)
    ],
)
def test_rerank_matches_reference(data: str, k1: int, k2: int) -> None:
    if data == "random":
        sizes = (8, 30) if k1 > 38 else (25, 110)
        q_feats, g_feats = random_features(k1 + k2, *sizes)
    else:
        q_feats, g_feats = clustered_features(k1 + k2)
    expected, expansions = reference_rerank(q_feats, g_feats, k1, k2, 0.3)
    actual = k_reciprocal_rerank(q_feats, g_feats, k1=k1, k2=k2, lambda_value=0.3)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(np.argsort(actual, axis=1), np.argsort(expected, axis=1))
    if data == "clustered":
        assert expansions > 0  # the k1/2 expansion branch is part of what is compared


def test_reference_would_catch_the_conventions() -> None:
    """The parity test can fail: each convention, changed alone, moves the distances."""
    q_feats, g_feats = clustered_features(1)
    expected, _ = reference_rerank(q_feats, g_feats, 20, 6, 0.3)
    actual = k_reciprocal_rerank(q_feats, g_feats)
    other_k = k_reciprocal_rerank(q_feats, g_feats, k1=19)  # p counted among the k1
    unnormalised = k_reciprocal_rerank(q_feats, g_feats, normalize=False)
    assert np.abs(actual - expected).max() < 2e-6
    assert np.abs(other_k - expected).max() > 1e-3
    assert np.abs(unnormalised - expected).max() > 1e-3


def test_lambda_one_is_the_normalised_original_distance() -> None:
    q_feats, g_feats = random_features(3, 6, 30)
    feats = np.concatenate([q_feats, g_feats]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    squared = 2.0 - 2.0 * feats @ feats.T
    expected = squared[:6, 6:] / squared[:6].max(axis=1, keepdims=True)
    original = k_reciprocal_rerank(q_feats, g_feats, lambda_value=1.0)
    np.testing.assert_allclose(original, expected, atol=1e-6)
    # ... so it ranks every query's gallery exactly as the plain cosine evaluation does.
    cosine = 1.0 - feats[:6] @ feats[6:].T
    np.testing.assert_array_equal(np.argsort(original, axis=1), np.argsort(cosine, axis=1))
    jaccard = k_reciprocal_rerank(q_feats, g_feats, lambda_value=0.0)
    assert (jaccard >= -1e-6).all() and (jaccard <= 1 + 1e-6).all()


def test_rerank_helps_on_clusters() -> None:
    q_feats, g_feats = clustered_features(4)
    labels = {
        "q_pids": np.arange(12) + 1,
        "g_pids": np.repeat(np.arange(12), 8) + 1,
        "q_cams": np.zeros(12, dtype=int),
        "g_cams": np.ones(96, dtype=int),
    }
    plain = rank_metrics(k_reciprocal_rerank(q_feats, g_feats, lambda_value=1.0), **labels)
    reranked = rank_metrics(k_reciprocal_rerank(q_feats, g_feats), **labels)
    assert reranked["mAP"] >= plain["mAP"]


def test_rerank_rejects_bad_arguments() -> None:
    q_feats, g_feats = random_features(0, 2, 5)
    with pytest.raises(ValueError, match="k1 and k2"):
        k_reciprocal_rerank(q_feats, g_feats, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(q_feats, g_feats, lambda_value=1.5)
    with pytest.raises(ValueError, match="same width"):
        k_reciprocal_rerank(q_feats, g_feats[:, :4])
