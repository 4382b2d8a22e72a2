"""Cross-camera association (Eq. 12): known answers, conflict breaking, invariants, quality."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ccafl.association import (
    EDGE_COLUMNS,
    associate,
    associate_graph,
    association_quality,
    center_per_camera,
    conflict_free_components,
    faiss_has_gpu,
)

DIM = 20


def unit(*terms: tuple[int, float]) -> np.ndarray:
    """Vector from (basis index, weight) terms, so test geometry reads as written."""
    vector = np.zeros(DIM)
    for axis, weight in terms:
        vector[axis] += weight
    return vector


def build(rows: list[tuple[str, int, np.ndarray]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = [name for name, _, _ in rows]
    cameras = np.array([camera for _, camera, _ in rows])
    centroids = np.stack([vector for _, _, vector in rows]).astype(np.float32)
    return names, centroids, cameras


def clusters(names: list[str], labels: np.ndarray) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for name, label in zip(names, labels.tolist(), strict=True):
        groups.setdefault(label, set()).add(name)
    return {frozenset(group) for group in groups.values()}


def edge_names(names: list[str], edges: pd.DataFrame) -> set[frozenset[str]]:
    return {
        frozenset((names[src], names[dst]))
        for src, dst in zip(edges["src_gid"], edges["dst_gid"], strict=True)
    }


def offset(camera: int) -> tuple[int, float]:
    """Small camera-specific shift (its own axis), the "camera bias" of a centroid."""
    return (12 + camera, 0.1)


def known_scene() -> list[tuple[str, int, np.ndarray]]:
    """Cameras 10, 20, 30 (non-contiguous ids on purpose), with one story per person."""
    return [
        # A and B: seen by every camera, only the camera bias differs -> joined.
        ("A10", 10, unit((0, 1.0), offset(0))),
        ("A20", 20, unit((0, 1.0), offset(1))),
        ("A30", 30, unit((0, 1.0), offset(2))),
        ("B10", 10, unit((1, 1.0), offset(0))),
        ("B20", 20, unit((1, 1.0), offset(1))),
        ("B30", 30, unit((1, 1.0), offset(2))),
        # C: cameras 10 and 20 only -> a pair, nothing in camera 30 is close.
        ("C10", 10, unit((2, 1.0), offset(0))),
        ("C20", 20, unit((2, 1.0), offset(1))),
        # D: only camera 30 -> singleton (every other centroid is orthogonal, dist ~1.41).
        ("D30", 30, unit((3, 1.0))),
        # E: mutual nearest neighbours, but cos = 1/sqrt(5) -> dist 1.05 > T = 1.0.
        ("E10", 10, unit((4, 1.0))),
        ("E20", 20, unit((4, 1.0), (5, 2.0))),
        # G20's nearest in camera 10 is F10, but F10's nearest in camera 20 is H20.
        ("F10", 10, unit((6, 1.0))),
        ("H20", 20, unit((6, 1.0), (7, 0.1))),
        ("G20", 20, unit((6, 1.0), (8, 0.5))),
    ]


def test_known_answer() -> None:
    names, centroids, cameras = build(known_scene())
    labels, edges = associate(centroids, cameras, 1.0, use_gpu=False)

    assert clusters(names, labels) == {
        frozenset({"A10", "A20", "A30"}),
        frozenset({"B10", "B20", "B30"}),
        frozenset({"C10", "C20"}),
        frozenset({"D30"}),
        frozenset({"E10"}),
        frozenset({"E20"}),
        frozenset({"F10", "H20"}),
        frozenset({"G20"}),
    }
    assert edge_names(names, edges) == {
        frozenset(pair)
        for pair in [
            ("A10", "A20"),
            ("A10", "A30"),
            ("A20", "A30"),
            ("B10", "B20"),
            ("B10", "B30"),
            ("B20", "B30"),
            ("C10", "C20"),
            ("F10", "H20"),
        ]
    }
    # Labels numbered by the smallest gid of each cluster.
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 6, 7]
    row = edges[(edges["src_gid"] == 0) & (edges["dst_gid"] == 1)].iloc[0]
    assert (row["src_camera"], row["dst_camera"]) == (10, 20)
    expected = np.linalg.norm(
        centroids[0] / np.linalg.norm(centroids[0]) - centroids[1] / np.linalg.norm(centroids[1])
    )
    assert row["distance"] == pytest.approx(expected, abs=1e-5)


def test_threshold_is_a_distance_between_unit_vectors() -> None:
    """E10-E20 is at 1.05 after normalisation: joined at T = 1.1, whatever the raw scale."""
    names, centroids, cameras = build(known_scene())
    labels, _ = associate(centroids * 37.0, cameras, 1.1, use_gpu=False)
    assert frozenset({"E10", "E20"}) in clusters(names, labels)


def test_longest_edge_of_a_conflicting_chain_is_removed() -> None:
    """a0 - b1 - c2 - d0 on a circle: a0 and d0 share camera 0, so b1 - c2 (longest) goes."""
    angles = {"a0": 0.0, "b1": 0.3, "c2": 0.8, "d0": 1.2}
    rows = [
        (name, int(name[1]), unit((0, np.cos(angle)), (1, np.sin(angle))))
        for name, angle in angles.items()
    ]
    names, centroids, cameras = build(rows)
    graph = associate_graph(centroids, cameras, 1.0, use_gpu=False)

    assert clusters(names, graph.labels) == {frozenset({"a0", "b1"}), frozenset({"c2", "d0"})}
    removed = graph.edges[~graph.edges["kept"]]
    assert edge_names(names, removed) == {frozenset({"b1", "c2"})}
    assert removed["distance"].iloc[0] == pytest.approx(2 * np.sin(0.25), abs=1e-5)
    assert edge_names(names, graph.kept_edges) == {
        frozenset({"a0", "b1"}),
        frozenset({"c2", "d0"}),
    }
    assert graph.n_conflicted_components == 1
    labels, edges = associate(centroids, cameras, 1.0, use_gpu=False)
    np.testing.assert_array_equal(labels, graph.labels)
    pd.testing.assert_frame_equal(edges, graph.kept_edges)


def test_edges_table_contract() -> None:
    _, centroids, cameras = build(known_scene())
    _, edges = associate(centroids, cameras, 1.0, use_gpu=False)
    assert tuple(edges.columns) == EDGE_COLUMNS
    assert [str(dtype) for dtype in edges.dtypes] == ["int64"] * 4 + ["float32"]
    assert (edges["src_gid"] < edges["dst_gid"]).all()
    assert edges.index.equals(pd.RangeIndex(len(edges)))
    full = associate_graph(centroids, cameras, 1.0, use_gpu=False).edges
    assert tuple(full.columns) == (*EDGE_COLUMNS, "kept")
    assert full["kept"].dtype == bool


def test_empty_and_single_camera_inputs() -> None:
    labels, edges = associate(np.zeros((0, 4), np.float32), np.zeros(0, int), 1.5)
    assert labels.shape == (0,) and len(edges) == 0 and tuple(edges.columns) == EDGE_COLUMNS
    assert [str(dtype) for dtype in edges.dtypes] == ["int64"] * 4 + ["float32"]
    vectors = np.random.default_rng(0).normal(size=(5, 4))
    labels, edges = associate(vectors, np.full(5, 3), 2.0)
    assert labels.tolist() == [0, 1, 2, 3, 4] and len(edges) == 0


def test_input_is_not_modified() -> None:
    vectors = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    before = vectors.copy()
    associate(vectors, np.arange(30) % 3, 1.5, use_gpu=False)
    np.testing.assert_array_equal(vectors, before)


@pytest.mark.parametrize(
    ("centroids", "cameras", "threshold", "message"),
    [
        (np.ones((3, 2)), np.zeros(2, int), 1.5, "cameras must be"),
        (np.ones(3), np.zeros(3, int), 1.5, "centroids must be"),
        (np.ones((3, 2)), np.zeros(3), 1.5, "integers"),
        (np.ones((3, 2)), np.zeros(3, int), 0.0, "threshold"),
        (np.array([[1.0, 0], [0, 0], [0, 1]]), np.arange(3), 1.5, "zero or not finite"),
        (np.array([[1.0, np.nan], [0, 1], [1, 1]]), np.arange(3), 1.5, "zero or not finite"),
    ],
)
def test_bad_input_is_rejected(centroids, cameras, threshold, message) -> None:
    with pytest.raises(ValueError, match=message):
        associate(centroids, cameras, threshold)


@pytest.mark.skipif(faiss_has_gpu(), reason="this faiss has a GPU")
def test_gpu_request_without_gpu_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="use_gpu=True"):
        associate(np.eye(3), np.arange(3), 1.5, use_gpu=True)


# --- references: the rules written as literally as possible ---------------------------------


def literal_conflict_breaking(
    n_gids: int, cameras: np.ndarray, src: np.ndarray, dst: np.ndarray, distance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """While a component has a camera conflict, drop its longest edge and recompute it."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n_gids))
    for a, b, weight in zip(src.tolist(), dst.tolist(), distance.tolist(), strict=True):
        graph.add_edge(a, b, key=(weight, a, b))
    pending = [set(nodes) for nodes in nx.connected_components(graph)]
    while pending:
        nodes = pending.pop()
        if len({int(cameras[node]) for node in nodes}) == len(nodes):
            continue
        component = graph.subgraph(nodes)
        longest = max(component.edges, key=lambda edge: component.edges[edge]["key"])
        graph.remove_edge(*longest)
        pending.extend(set(part) for part in nx.connected_components(graph.subgraph(nodes)))
    smallest = np.arange(n_gids)
    for nodes in nx.connected_components(graph):
        smallest[list(nodes)] = min(nodes)
    labels = np.unique(smallest, return_inverse=True)[1]
    kept = np.array([graph.has_edge(a, b) for a, b in zip(src, dst, strict=True)], dtype=bool)
    return labels, kept


def dense_mutual_edges(
    centroids: np.ndarray, cameras: np.ndarray, threshold: float
) -> tuple[set[tuple[int, int]], np.ndarray, np.ndarray]:
    """Eq. 12 from the full float64 distance matrix; also the matrix and per-camera sims."""
    unit_rows = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    distance = np.sqrt(np.clip(2 - 2 * unit_rows @ unit_rows.T, 0, None))
    nearest = {}
    for camera in np.unique(cameras):
        members = np.flatnonzero(cameras == camera)
        nearest[camera] = members[np.argmin(distance[:, members], axis=1)]
    edges = set()
    for i in range(len(cameras)):
        for j in range(i + 1, len(cameras)):
            if (
                cameras[i] != cameras[j]
                and distance[i, j] < threshold
                and nearest[cameras[j]][i] == j
                and nearest[cameras[i]][j] == i
            ):
                edges.add((i, j))
    return edges, distance, unit_rows


def has_near_ties(distance: np.ndarray, cameras: np.ndarray, threshold: float) -> bool:
    """True when float32 search could legitimately differ from the float64 reference."""
    gap = 1e-4
    if np.any(np.abs(distance - threshold) < gap):
        return True
    for camera in np.unique(cameras):
        block = np.sort(distance[:, cameras == camera], axis=1)
        if block.shape[1] > 1 and np.any(block[:, 1] - block[:, 0] < gap):
            return True
    return False


@st.composite
def scenes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Random clustered centroids: persons seen by some cameras, plus noise, any gid order."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_gids = draw(st.integers(1, 40))
    dim = draw(st.integers(2, 8))
    n_cameras = draw(st.integers(1, 5))
    n_persons = draw(st.integers(1, n_gids))
    noise = draw(st.floats(0.0, 1.0))
    persons = rng.normal(size=(n_persons, dim))
    centroids = persons[rng.integers(0, n_persons, n_gids)] + noise * rng.normal(size=(n_gids, dim))
    cameras = rng.integers(0, n_cameras, n_gids) * 7 - 3  # arbitrary camera ids
    threshold = draw(st.floats(0.05, 2.0))
    return centroids.astype(np.float32), cameras, threshold


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_association_invariants(scene: tuple[np.ndarray, np.ndarray, float]) -> None:
    centroids, cameras, threshold = scene
    graph = associate_graph(centroids, cameras, threshold, use_gpu=False)
    labels, edges = graph.labels, graph.edges

    n_clusters = labels.max() + 1
    assert sorted(set(labels.tolist())) == list(range(n_clusters))  # contiguous
    first_gid = [np.flatnonzero(labels == label)[0] for label in range(n_clusters)]
    assert first_gid == sorted(first_gid)  # numbered by smallest gid
    for label in range(n_clusters):  # never two gids of one camera
        members_cameras = cameras[labels == label]
        assert len(set(members_cameras.tolist())) == len(members_cameras)
    assert (edges["src_camera"] != edges["dst_camera"]).all()
    assert (edges["src_camera"].to_numpy() == cameras[edges["src_gid"]]).all()
    assert (edges["distance"].astype(np.float64) < threshold).all()
    assert (edges["src_gid"] < edges["dst_gid"]).all()
    assert not edges.duplicated(["src_gid", "dst_gid"]).any()
    # At most one edge per gid and other camera (mutual nearest neighbours are unique).
    ends = pd.concat(
        [
            edges[["src_gid", "dst_camera"]].set_axis(["gid", "camera"], axis=1),
            edges[["dst_gid", "src_camera"]].set_axis(["gid", "camera"], axis=1),
        ]
    )
    assert not ends.duplicated().any()
    # Labels are exactly the components of the kept edges.
    kept = edges[edges["kept"]]
    kept_graph = nx.Graph()
    kept_graph.add_nodes_from(range(len(labels)))
    kept_graph.add_edges_from(zip(kept["src_gid"], kept["dst_gid"], strict=True))
    for nodes in nx.connected_components(kept_graph):
        assert len(set(labels[list(nodes)].tolist())) == 1
    assert nx.number_connected_components(kept_graph) == n_clusters
    # Conflict breaking equals the literal rule on the same edges.
    ref_labels, ref_kept = literal_conflict_breaking(
        len(labels),
        cameras,
        edges["src_gid"].to_numpy(),
        edges["dst_gid"].to_numpy(),
        edges["distance"].to_numpy(),
    )
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(edges["kept"].to_numpy(), ref_kept)


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_edges_match_a_dense_reference(scene: tuple[np.ndarray, np.ndarray, float]) -> None:
    centroids, cameras, threshold = scene
    reference, distance, _ = dense_mutual_edges(centroids.astype(np.float64), cameras, threshold)
    assume(not has_near_ties(distance, cameras, threshold))
    edges = associate_graph(centroids, cameras, threshold, use_gpu=False).edges
    assert set(zip(edges["src_gid"].tolist(), edges["dst_gid"].tolist(), strict=True)) == reference
    expected = distance[edges["src_gid"], edges["dst_gid"]]
    np.testing.assert_allclose(edges["distance"], expected, atol=1e-5)


def test_gid_order_does_not_matter() -> None:
    scene_rng = np.random.default_rng(7)
    persons = scene_rng.normal(size=(30, 16))
    centroids = np.repeat(persons, 4, axis=0) + 0.3 * scene_rng.normal(size=(120, 16))
    cameras = np.tile(np.arange(4), 30)
    order = scene_rng.permutation(120)
    labels, edges = associate(centroids, cameras, 1.5, use_gpu=False)
    shuffled_labels, shuffled_edges = associate(
        centroids[order], cameras[order], 1.5, use_gpu=False
    )
    partition = {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)}
    shuffled = {frozenset(order[shuffled_labels == k].tolist()) for k in np.unique(shuffled_labels)}
    assert partition == shuffled
    assert len(edges) == len(shuffled_edges)
    assert association_quality(labels, np.repeat(np.arange(30), 4))["precision"] > 0.9


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arbitrary cross-camera graphs with many equal distances (tie-breaking matters)."""
    n_gids = draw(st.integers(1, 14))
    cameras = np.array(draw(st.lists(st.integers(0, 3), min_size=n_gids, max_size=n_gids)))
    pairs = [
        (i, j) for i in range(n_gids) for j in range(i + 1, n_gids) if cameras[i] != cameras[j]
    ]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    chosen.sort()
    weights = draw(
        st.lists(st.sampled_from([0.25, 0.5, 1.0]), min_size=len(chosen), max_size=len(chosen))
    )
    src = np.array([i for i, _ in chosen], dtype=np.int64)
    dst = np.array([j for _, j in chosen], dtype=np.int64)
    return n_gids, cameras, src, dst, np.array(weights, dtype=np.float32)


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_conflict_breaking_equals_literal_rule(graph) -> None:
    n_gids, cameras, src, dst, distance = graph
    labels, kept = conflict_free_components(n_gids, cameras, src, dst, distance)
    ref_labels, ref_kept = literal_conflict_breaking(n_gids, cameras, src, dst, distance)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(kept, ref_kept)


def test_conflict_breaking_keeps_cycle_edges_only_before_closing() -> None:
    """u-v (0.1), v-w (0.2), w-x (0.4), u-w (0.5); u and x share camera 0.

    The literal rule removes u-w (longest, still conflicted) then w-x; {u, v, w} stays joined
    but u-w is gone, so it must not be reported as kept.
    """
    cameras = np.array([0, 1, 2, 0])  # u v w x
    src, dst = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 2])
    distance = np.array([0.1, 0.2, 0.4, 0.5], dtype=np.float32)
    labels, kept = conflict_free_components(4, cameras, src, dst, distance)
    assert labels.tolist() == [0, 0, 0, 1]
    assert kept.tolist() == [True, True, False, False]


def test_association_quality_hand_worked() -> None:
    # Clusters {0,1}, {2,3}, {4}; identities 5 = {0,1,2}, 7 = {3,4}.
    labels = np.array([0, 0, 1, 1, 2])
    truth = np.array([5, 5, 5, 7, 7])
    # Predicted pairs (0,1) (2,3); true pairs (0,1) (0,2) (1,2) (3,4); correct: (0,1).
    quality = association_quality(labels, truth)
    assert quality["precision"] == pytest.approx(1 / 2)
    assert quality["recall"] == pytest.approx(1 / 4)
    assert quality["f_score"] == pytest.approx(1 / 3)
    assert quality["expansion"] == pytest.approx(2.0)  # 5 -> clusters 0, 1; 7 -> clusters 1, 2
    assert (quality["n_clusters"], quality["n_identities"], quality["n_gids"]) == (3, 2, 5)
    pair_counts = [quality[key] for key in ("predicted_pairs", "true_pairs", "correct_pairs")]
    assert pair_counts == [2, 4, 1]
    edges = pd.DataFrame({"src_gid": [0, 2], "dst_gid": [1, 3]})
    with_edges = association_quality(labels, truth, edges=edges)
    assert (with_edges["n_edges"], with_edges["edge_precision"]) == (2, 0.5)


def test_association_quality_degenerate_cases() -> None:
    singletons = association_quality(np.arange(4), np.array([0, 0, 1, 1]))
    assert (singletons["precision"], singletons["recall"], singletons["f_score"]) == (1.0, 0, 0)
    assert singletons["expansion"] == 2.0
    nothing_to_find = association_quality(np.arange(3), np.array([4, 5, 6]))
    assert (nothing_to_find["precision"], nothing_to_find["recall"]) == (1.0, 1.0)
    assert nothing_to_find["f_score"] == 1.0
    all_wrong = association_quality(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert (all_wrong["precision"], all_wrong["recall"], all_wrong["f_score"]) == (0, 0, 0)
    empty = association_quality(np.array([], int), np.array([], int))
    assert (empty["precision"], empty["recall"], empty["expansion"]) == (1.0, 1.0, 1.0)
    no_edges = association_quality(
        np.arange(2),
        np.arange(2),
        edges=pd.DataFrame({"src_gid": [], "dst_gid": []}, dtype=np.int64),
    )
    assert no_edges["edge_precision"] == 1.0
    with pytest.raises(ValueError, match="equal 1-D"):
        association_quality(np.arange(3), np.arange(4))


def _camera_styled_world(n_people: int = 12, seed: int = 0):
    """Every person seen once in each of two cameras whose styles point opposite ways."""
    rng = np.random.default_rng(seed)
    people = rng.standard_normal((n_people, DIM))
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    style = np.zeros(DIM)
    style[0] = 3.0
    centroids = np.vstack([people + style, people - style])
    centroids += 0.01 * rng.standard_normal(centroids.shape)
    cameras = np.repeat([0, 1], n_people)
    return centroids.astype(np.float32), cameras, np.tile(np.arange(n_people), 2)


def test_camera_centering_removes_a_shared_camera_style() -> None:
    centroids, cameras, truth = _camera_styled_world()
    raw_labels, raw_edges = associate(centroids, cameras, 1.5)
    assert len(raw_edges) == 0  # the styles put every cross-camera pair beyond T
    centred = center_per_camera(centroids, cameras)
    assert centred.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, rtol=1e-5)
    labels, edges = associate(centred, cameras, 1.5)
    assert len(edges) == len(truth) // 2
    assert association_quality(labels, truth)["f_score"] == 1.0
    assert association_quality(raw_labels, truth)["f_score"] == 0.0


def test_camera_centering_keeps_a_lone_gid_and_leaves_the_input() -> None:
    centroids = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    before = centroids.copy()
    centred = center_per_camera(centroids, np.array([7, 2, 2]))
    np.testing.assert_allclose(centred[0], [0.6, 0.8], rtol=1e-6)  # alone in camera 7: raw
    np.testing.assert_allclose(centred[1:], [[1, -1], [-1, 1]] / np.sqrt(2), rtol=1e-6)
    np.testing.assert_array_equal(centroids, before)


def test_identical_gids_of_one_camera_do_not_become_nan() -> None:
    centroids = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    centred = center_per_camera(centroids, np.array([0, 0, 1]))
    assert np.isfinite(centred).all()


def test_camera_centering_is_the_default_and_the_paper_rule_stays_available() -> None:
    """Centring is the default (issue 21: it meets every world's target); false keeps Eq. 12."""
    from ccafl.config import validate

    assert validate({})["train"]["camera_centering"] is True
    assert validate({"train": {"camera_centering": False}})["train"]["camera_centering"] is False


def test_pooled_domains_are_associated_apart() -> None:
    """DG sources share no person: with ``domains`` no edge joins two of them, and each
    domain's clusters and edges are those of associating it alone."""
    import torch

    from ccafl.association.pseudo_labels import associate_identities

    rng = np.random.default_rng(0)
    people = rng.standard_normal((3, 16))
    # Domain 0 = cameras 0, 1; domain 1 = cameras 2, 3; both show the same three faces, so
    # without the domains their gids link across.
    centroids = np.tile(people, (4, 1)) + 0.05 * rng.standard_normal((12, 16))
    cameras = np.repeat([0, 1, 2, 3], 3)
    domains = cameras // 2
    gids = np.arange(12)
    features = torch.as_tensor(centroids, dtype=torch.float32)
    pooled = associate_identities(features, gids, cameras, 12, 1.5)
    assert (pooled.edges["src_camera"] // 2 != pooled.edges["dst_camera"] // 2).any()
    apart = associate_identities(features, gids, cameras, 12, 1.5, domains=domains)
    edges = apart.edges
    assert list(edges.columns) == list(EDGE_COLUMNS) and len(edges) > 0
    assert (edges["src_camera"] // 2 == edges["dst_camera"] // 2).all()
    assert list(zip(edges["src_gid"], edges["dst_gid"], strict=True)) == sorted(
        zip(edges["src_gid"], edges["dst_gid"], strict=True)
    )
    for domain in (0, 1):
        members = np.flatnonzero(domains == domain)
        alone, alone_edges = associate(centroids[members], cameras[members], 1.5)
        labels = apart.gid_labels[members]
        same_partition = len(set(zip(labels, alone, strict=True))) == len(set(alone))
        assert same_partition and len(set(labels)) == len(set(alone))
        mine = edges[edges["src_camera"] // 2 == domain]
        assert np.array_equal(mine["src_gid"].to_numpy(), members[alone_edges["src_gid"]])
        assert np.array_equal(mine["dst_gid"].to_numpy(), members[alone_edges["dst_gid"]])
    # Contiguous and numbered by each cluster's smallest gid, as associate numbers them.
    _, first = np.unique(apart.gid_labels, return_index=True)
    assert np.array_equal(apart.gid_labels[np.sort(first)], np.arange(apart.n_labels))
    assert not set(apart.gid_labels[domains == 0]) & set(apart.gid_labels[domains == 1])
