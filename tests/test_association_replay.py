"""scripts/association_replay.py's extra rules: its dense Eq. 12 is the pipeline's, and each
remedy changes the graph the way its definition says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ccafl.association import associate

REPO = Path(__file__).resolve().parents[1]


def load_replay():
    spec = importlib.util.spec_from_file_location(
        "association_replay", REPO / "scripts" / "association_replay.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def world(n_persons: int = 60, n_cameras: int = 4, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    seen = np.argsort(rng.random((n_persons, n_cameras)), axis=1)[:, :3]
    person = np.repeat(np.arange(n_persons), 3)
    camera = seen.ravel()
    centroids = rng.standard_normal((n_persons, dim))[person]
    centroids += 0.9 * rng.standard_normal((len(person), dim))
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    euclidean = np.sqrt(np.clip(2 - 2 * unit @ unit.T, 0, None))
    return unit.astype(np.float32), camera, euclidean


def test_dense_rule_with_no_remedy_is_the_pipelines_association() -> None:
    script = load_replay()
    unit, camera, euclidean = world()
    labels, n_edges = script.mutual_labels(euclidean, euclidean, camera, 1.5)
    np.testing.assert_array_equal(labels, associate(unit, camera, 1.5)[0])
    assert n_edges > 50


def test_margin_removes_edges_and_top2_adds_them() -> None:
    script = load_replay()
    _, camera, euclidean = world()
    paper = script.mutual_labels(euclidean, euclidean, camera, 1.5)[1]
    margin = script.mutual_labels(euclidean, euclidean, camera, 1.5, margin=0.1)[1]
    top2 = script.mutual_labels(euclidean, euclidean, camera, 1.5, top=2)[1]
    assert 0 < margin < paper < top2
    # A margin beyond any distance leaves no edge: every gid its own cluster.
    labels, none = script.mutual_labels(euclidean, euclidean, camera, 1.5, margin=3.0)
    assert none == 0 and len(np.unique(labels)) == len(camera)


def test_more_rules_name_every_remedy_and_average_the_history() -> None:
    script = load_replay()
    unit, camera, _ = world()
    history: list[np.ndarray] = []
    first = script.more_rules(unit, camera, 1.5, history)
    second = script.more_rules(unit.copy(), camera, 1.5, history)
    assert {"margin 0.04", "top2", "jaccard k1=8", "camera-centred top2"} <= set(first)
    assert len(history) == 2
    # The same centroids twice: their mean is the centroids, so the ensemble is the paper rule.
    np.testing.assert_array_equal(second["mean of last 2"], associate(unit, camera, 1.5)[0])
