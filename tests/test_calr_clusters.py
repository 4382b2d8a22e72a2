"""CALR's clustering, refinement, weights, quality metrics and losses, one equation per test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ccafl.association.clusters import (
    camera_entropy_weights,
    cluster_within_cameras,
    global_clusters,
    knn_graph,
    refine_by_pivots,
    select_pivots,
)
from ccafl.association.quality import bcubed_quality, calr_cluster_quality
from ccafl.losses import (
    camera_adversarial_loss,
    reverse_gradient,
    weighted_cluster_contrastive_loss,
)
from ccafl.models.camera_discriminator import CameraDiscriminator
from ccafl.reranking import jaccard_distance


def _blobs(n_blobs: int, size: int, dim: int = 16, spread: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_blobs), size)
    feats = centres[truth] + spread * rng.normal(size=(len(truth), dim))
    return feats.astype(np.float32), truth


def _dense_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Steps 1-7 of ccafl.reranking written out densely, one image at a time."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    d = d / d.max(axis=1, keepdims=True)
    d_rank = d.copy()
    np.fill_diagonal(d_rank, -1.0)
    rank = np.argsort(d_rank, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return [j for j in forward if i in rank[j, : k + 1]]

    v = np.zeros((n, n))
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        members = set(reciprocal(i, k1))
        expanded = set(members)
        for q in list(members):
            cand = reciprocal(q, half)
            if 3 * len(set(cand) & members) > 2 * len(cand):
                expanded |= set(cand)
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    mins = np.minimum(v[:, None], v[None]).sum(-1)
    return 1.0 - mins / (2.0 - mins)


def test_jaccard_distance_matches_a_dense_reference():
    feats, _ = _blobs(4, 6, spread=0.3, seed=3)
    got = jaccard_distance(feats, k1=6, k2=3)
    np.testing.assert_allclose(got, _dense_jaccard(feats.astype(np.float64), 6, 3), atol=1e-5)
    assert np.allclose(got, got.T, atol=1e-6) and np.allclose(np.diag(got), 0.0, atol=1e-6)


def test_local_clusters_recover_each_cameras_people_and_restart_at_zero():
    feats, truth = _blobs(6, 5, spread=0.05)
    cameras = np.where(truth < 3, 0, 1)  # people 0-2 seen by camera 0, 3-5 by camera 1
    labels = cluster_within_cameras(feats, cameras, images_per_cluster=5, k1=6, k2=2)
    for camera in (0, 1):
        rows = cameras == camera
        assert set(labels[rows]) == {0, 1, 2}
        assert bcubed_quality(labels[rows], truth[rows])["f_score"] == pytest.approx(1.0)


def test_a_camera_too_small_for_the_cluster_size_rule_is_named():
    feats, _ = _blobs(2, 5)
    cameras = np.array([0] * 7 + [3] * 3)
    with pytest.raises(ValueError, match="camera 3 has 3 training images.*images_per_cluster=5"):
        cluster_within_cameras(feats, cameras)


def test_knn_graph_links_and_pivot_scores_follow_the_formula():
    # Four unit vectors: 0-1 at cos 0.8, 2 at cos 0.6 to 0, 3 orthogonal to all.
    feats = np.array([[1, 0, 0], [0.8, 0.6, 0], [0.6, -0.8, 0], [0, 0, 1]], dtype=np.float32)
    graph = knn_graph(feats, k=3, min_similarity=0.5)
    sim = feats @ feats.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :3]
    mean_d = float((1 - np.take_along_axis(sim, order, axis=1)).mean())
    links = {(int(i), int(j)) for i, j in zip(graph.src, graph.dst, strict=True)}
    assert links == {(0, 1), (1, 0), (0, 2), (2, 0)}  # cos(1, 2) = 0 < 0.5; 3 links nothing
    expected_0 = 1 / (0.2 + mean_d) + 1 / (0.4 + mean_d)
    assert graph.score[0] == pytest.approx(expected_0, rel=1e-5)
    assert graph.score[3] == 0.0


def test_global_clusters_find_the_dense_groups_and_drop_small_ones():
    feats, truth = _blobs(3, 8, spread=0.03)
    loners, _ = _blobs(3, 1, seed=9)  # three isolated images
    labels, _ = global_clusters(np.concatenate([feats, loners]), k=6, min_similarity=0.5)
    assert (labels[-3:] == -1).all()
    assert bcubed_quality(labels[:-3], truth)["f_score"] == pytest.approx(1.0)
    assert sorted(set(labels[:-3])) == [0, 1, 2]


def test_pivots_densest_and_the_official_codes_last_above_mean():
    labels = np.array([0, 0, 0, 1, 1, -1, 2])
    score = np.array([0.5, 0.9, 0.6, 0.1, 0.7, 1.0, 0.0])  # mean 0.543 (the outlier counts)
    # Above the mean: 1, 2 (cluster 0), 4 (cluster 1); cluster 2 has nobody -> no pivot.
    assert select_pivots(labels, score).tolist() == [1, 4, -1]
    assert select_pivots(labels, score, rule="last_above_mean").tolist() == [2, 4, -1]
    tied = select_pivots(np.array([0, 0, 1]), np.array([2.0, 2.0, 0.0]))
    assert tied.tolist() == [0, -1]  # a tie goes to the lower index
    with pytest.raises(ValueError, match="pivot rule"):
        select_pivots(labels, score, rule="argmax")


def test_refinement_drops_only_same_camera_members_outside_the_pivots_local_cluster():
    glob = np.array([0, 0, 0, 0, 0, 1, 1, -1])
    local = np.array([4, 4, 7, 1, 2, 3, 5, 4])
    cams = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    pivots = np.array([0, -1])  # cluster 1 has no pivot
    refined = refine_by_pivots(glob, local, cams, pivots)
    assert refined.tolist() == [0, 0, -1, 0, 0, 1, 1, -1]
    assert (refine_by_pivots(glob, local, cams, pivots, decay=0.0) == glob).all()
    assert (glob == [0, 0, 0, 0, 0, 1, 1, -1]).all()  # input untouched


def test_camera_entropy_weights():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 2, -1])
    cams = np.array([0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 1])
    w = camera_entropy_weights(labels, cams)
    assert w[0] == 0.0
    assert w[1] == pytest.approx(math.log1p(math.log(2)))
    assert w[2] == pytest.approx(math.log1p(math.log(6)))


def test_bcubed_known_answer():
    labels = np.array([0, 0, 0, 1, 1])
    truth = np.array([0, 0, 1, 1, 1])
    q = bcubed_quality(labels, truth)
    # n_gk: (k0,g0)=2, (k0,g1)=1, (k1,g1)=2; |k0|=3 |k1|=2 |g0|=2 |g1|=3.
    assert q["precision"] == pytest.approx((4 / 3 + 1 / 3 + 4 / 2) / 5)
    assert q["recall"] == pytest.approx((4 / 2 + 1 / 3 + 4 / 3) / 5)
    assert q["expansion"] == pytest.approx(1.5)  # g0 in one cluster, g1 in two


def test_calr_quality_uses_each_curves_own_sample_set():
    truth = np.array([0, 0, 1, 1, 2, 2])
    cams = np.array([0, 1, 0, 1, 0, 1])
    glob = np.array([0, 0, 0, 1, 1, -1])
    refined = np.array([0, 0, -1, 1, 1, -1])
    local = np.array([0, 0, 1, 1, 2, 2])
    q = calr_cluster_quality(glob, refined, local, cams, truth)
    assert q["refined"]["n"] == 4 and q["global"]["n"] == 6
    assert q["refined"]["bcubed_precision"] == pytest.approx(
        bcubed_quality(refined[refined >= 0], truth[refined >= 0])["precision"]
    )
    assert q["local"]["bcubed_f_score"] == pytest.approx(1.0)  # one image per id per camera


def test_weighted_cluster_loss_is_the_weighted_mean_and_never_nan():
    torch.manual_seed(0)
    feats, protos = torch.randn(6, 8), torch.randn(3, 8)
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    w = torch.tensor([0.0, 0.5, 1.0])
    logits = torch.nn.functional.normalize(feats) @ torch.nn.functional.normalize(protos).T / 0.05
    per = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (w[targets] * per).sum() / w[targets].sum()
    got = weighted_cluster_contrastive_loss(feats, protos, targets, w)
    assert torch.allclose(got, expected)
    assert torch.allclose(weighted_cluster_contrastive_loss(feats, protos, targets), per.mean())
    zero = weighted_cluster_contrastive_loss(feats, protos, targets, torch.zeros(3))
    assert zero.item() == 0.0


def test_gradient_reversal_and_the_two_camera_loss_forms():
    x = torch.randn(4, 3, requires_grad=True)
    (reverse_gradient(x, 0.5) * 2.0).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -1.0))
    logits, cams = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(
        camera_adversarial_loss(logits, cams), torch.nn.functional.cross_entropy(logits, cams)
    )
    p = torch.softmax(logits, dim=1)
    code = (-p[torch.arange(5), cams] + torch.logsumexp(p, dim=1)).mean()
    assert torch.allclose(camera_adversarial_loss(logits, cams, form="calr_code"), code)
    head = CameraDiscriminator(3, n_cameras=4)
    assert head(torch.randn(5, 3)).shape == (5, 4)
    with pytest.raises(ValueError, match="at least 2 cameras"):
        CameraDiscriminator(3, n_cameras=1)


def test_refined_image_clusters_drop_same_camera_strangers_and_renumber():
    from ccafl.association.pseudo_labels import refined_clusters

    feats, truth = _blobs(3, 8, spread=0.03)
    cameras = np.tile(np.array([0, 1]), 12)
    # Local clusters: right for person 0 and 2, while camera 0 splits person 1 in two.
    local = truth.copy()
    local[(truth == 1) & (cameras == 0) & (np.arange(24) % 4 == 0)] = 9
    found = refined_clusters(
        torch.as_tensor(feats), cameras, local, k=8, min_similarity=0.5, min_size=5
    )
    assert (found.global_labels >= 0).all() and found.global_labels.max() == 2
    kept = found.image_labels >= 0
    assert kept.sum() >= 24 - 2  # at most the split-off camera-0 images of person 1 go
    assert sorted(set(found.image_labels[kept])) == list(range(found.n_labels))
    assert found.weights.shape == (found.n_labels,)
    assert np.allclose(found.weights, math.log1p(math.log(2)))  # every cluster 50/50 cameras


def test_the_sampler_never_draws_an_image_labelled_negative():
    from ccafl.data.samplers import PKBatchSampler

    labels = np.array([0, 0, -1, 1, 1, -1, 2, 2])
    drawn = {i for batch in PKBatchSampler(labels, 3, 2, 20, seed=1) for i in batch}
    assert drawn == {0, 1, 3, 4, 6, 7}


def test_refinement_off_trains_on_the_global_clusters():
    from ccafl.association.pseudo_labels import refined_clusters

    feats, truth = _blobs(3, 8, spread=0.03)
    cameras = np.tile(np.array([0, 1]), 12)
    local = np.arange(24)  # every image its own local cluster: refinement would drop a lot
    args = dict(k=8, min_similarity=0.5, min_size=5)
    off = refined_clusters(torch.as_tensor(feats), cameras, local, refine=False, **args)
    on = refined_clusters(torch.as_tensor(feats), cameras, local, **args)
    np.testing.assert_array_equal(off.image_labels, off.global_labels)
    assert on.n_trained < off.n_trained
