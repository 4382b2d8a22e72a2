"""The approximate association search (train.association_search): its inverted-file search
against brute force, its graph against the exact one, determinism and the auto rule."""

from __future__ import annotations

import numpy as np
import pytest

from ccafl.association import associate_graph, association_quality
from ccafl.association import graph as association_graph
from ccafl.association.graph import (
    APPROXIMATE_FROM,
    EDGE_COLUMNS,
    _inverted_file_nearest,
    approximate_nearest_per_camera,
)


def low_rank_world(
    n_persons: int = 300, n_cameras: int = 5, dim: int = 256, rank: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids, camera per gid, person per gid): every person in 3 cameras, identity on a
    ``rank``-dimensional subspace, camera bias and isotropic noise in all ``dim`` axes."""
    rng = np.random.default_rng(seed)
    seen = np.argsort(rng.random((n_persons, n_cameras)), axis=1)[:, :3]
    person = np.repeat(np.arange(n_persons), 3)
    camera = seen.ravel()
    axes = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T * np.sqrt(dim / rank)
    identity = rng.standard_normal((n_persons, rank)) @ axes
    bias = 0.5 * rng.standard_normal((n_cameras, dim))
    noise = 0.3 * rng.standard_normal((len(person), dim))
    centroids = (identity[person] + bias[camera] + noise).astype(np.float32)
    return centroids, camera, person


def edge_set(graph) -> set[tuple[int, int]]:
    edges = graph.edges
    return set(zip(edges["src_gid"].tolist(), edges["dst_gid"].tolist(), strict=True))


def test_inverted_file_with_every_list_probed_is_brute_force() -> None:
    """Probing all lists, the search is exact: argmin of |q - y|^2 + residual_sq[y]."""
    rng = np.random.default_rng(1)
    database = rng.standard_normal((400, 6)).astype(np.float32)
    residual_sq = rng.random(400).astype(np.float32)
    queries = rng.standard_normal((300, 6)).astype(np.float32)
    found = _inverted_file_nearest(database, residual_sq, queries, probes=10_000, seed=0)
    distance = ((queries[:, None, :] - database[None]) ** 2).sum(-1) + residual_sq
    expected = distance.argmin(axis=1)
    # float32 products may order near-ties differently: compare the distances reached.
    rows = np.arange(len(queries))
    np.testing.assert_allclose(distance[rows, found], distance[rows, expected], rtol=1e-5)
    assert (found == expected).mean() > 0.99


def test_inverted_file_with_one_probe_only_sees_its_list() -> None:
    """One probe of many lists cannot always find the nearest row: the search is not exact
    (otherwise the test above would prove nothing about probing)."""
    rng = np.random.default_rng(2)
    database = rng.standard_normal((900, 8)).astype(np.float32)
    queries = rng.standard_normal((500, 8)).astype(np.float32)
    zero = np.zeros(900, dtype=np.float32)
    one_probe = _inverted_file_nearest(database, zero, queries, probes=1, seed=0)
    expected = ((queries[:, None, :] - database[None]) ** 2).sum(-1).argmin(axis=1)
    assert 0.3 < (one_probe == expected).mean() < 1.0


def test_approximate_graph_finds_the_true_matches_of_the_exact_graph() -> None:
    """On identity that lives on few axes, the approximate graph keeps every exact edge
    between two gids of one person and clusters as well as the exact graph."""
    centroids, cameras, person = low_rank_world()
    exact = associate_graph(centroids, cameras, 1.5)
    approximate = associate_graph(centroids, cameras, 1.5, search="approximate")
    exact_edges, approximate_edges = edge_set(exact), edge_set(approximate)
    true_edges = {edge for edge in exact_edges if person[edge[0]] == person[edge[1]]}
    assert len(true_edges) > 500
    assert len(true_edges & approximate_edges) / len(true_edges) >= 0.99
    f_exact = association_quality(exact.labels, person)["f_score"]
    f_approximate = association_quality(approximate.labels, person)["f_score"]
    assert f_approximate >= f_exact - 0.02


def test_approximate_graph_has_the_exact_graphs_schema_and_is_deterministic() -> None:
    centroids, cameras, _ = low_rank_world(n_persons=120)
    exact = associate_graph(centroids, cameras, 1.5)
    first = associate_graph(centroids, cameras, 1.5, search="approximate")
    second = associate_graph(centroids.copy(), cameras, 1.5, search="approximate")
    assert list(first.kept_edges.columns) == list(EDGE_COLUMNS)
    assert first.kept_edges.dtypes.equals(exact.kept_edges.dtypes)
    assert (first.edges["distance"] < 1.5).all()
    assert (first.edges["src_gid"] < first.edges["dst_gid"]).all()
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.edges.equals(second.edges)
    # An edge found by both searches has the same stored distance (one distance function).
    both = first.edges.merge(exact.edges, on=["src_gid", "dst_gid"], suffixes=("", "_exact"))
    assert len(both) > 0
    np.testing.assert_array_equal(both["distance"], both["distance_exact"])


def test_projection_as_wide_as_the_input_falls_back_to_exact_search() -> None:
    centroids, cameras, _ = low_rank_world(n_persons=60, dim=64)
    vectors = np.ascontiguousarray(centroids)
    norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
    codes = np.unique(cameras, return_inverse=True)[1]
    wide = approximate_nearest_per_camera(vectors, norms, codes, 5, dims=64)
    exact = association_graph._nearest_per_camera(vectors, norms, codes, 5, False)
    np.testing.assert_array_equal(wide, exact)


def test_auto_search_is_exact_below_the_size_and_approximate_from_it(monkeypatch) -> None:
    centroids, cameras, _ = low_rank_world(n_persons=100)
    exact = associate_graph(centroids, cameras, 1.5)
    auto = associate_graph(centroids, cameras, 1.5, search="auto")
    assert auto.edges.equals(exact.edges)
    assert len(cameras) < APPROXIMATE_FROM
    monkeypatch.setattr(association_graph, "APPROXIMATE_FROM", len(cameras))
    monkeypatch.setattr(association_graph, "faiss_has_gpu", lambda: False)
    approximate = associate_graph(centroids, cameras, 1.5, search="approximate")
    assert associate_graph(centroids, cameras, 1.5, search="auto").edges.equals(approximate.edges)
    assert not approximate.edges.equals(exact.edges)  # so the two checks above differ


def test_unknown_search_is_an_error_naming_the_choices() -> None:
    centroids, cameras, _ = low_rank_world(n_persons=20)
    with pytest.raises(ValueError, match="exact, approximate, auto"):
        associate_graph(centroids, cameras, 1.5, search="fast")
