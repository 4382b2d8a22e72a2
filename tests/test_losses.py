"""Hand-computed checks of the CCAFL losses (ccafl.losses) and the global-ID classifier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ccafl.losses import (
    centroid_contrastive_loss,
    gid_classifier_loss,
    hard_instance_loss,
    ical_loss,
    ical_targets,
    icdl_loss,
    image_text_cross_entropy,
    prompt_loss,
    prototype_contrastive_loss,
    supervised_contrastive_i2t,
    supervised_contrastive_t2i,
)
from ccafl.models.classifier import CosineClassifier

E = math.e


def unit(degrees: float) -> list[float]:
    """2-D unit vector at an angle, so cosine similarities are cos(angle differences)."""
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians)]


def close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> bool:
    return abs(float(value.detach()) - expected) < tol


# ------------------------------------------------------------------------------ Eq. 1-3


def test_supervised_contrastive_single_positive() -> None:
    # images (1,0),(0,1); texts (1,0),(0,1); labels 0,1; scale 1 -> logits = identity matrix.
    # i2t row 0: -log(e / (e + 1)) = log(1 + 1/e) = 0.313262; row 1 the same.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = images.clone()
    labels = torch.tensor([0, 1])
    expected = math.log(1 + 1 / E)
    assert close(supervised_contrastive_i2t(images, texts, labels, 1.0), expected)
    assert close(supervised_contrastive_t2i(images, texts, labels, 1.0), expected)
    assert close(prompt_loss(images, texts, labels, 1.0), 2 * expected)


def test_supervised_contrastive_repeated_labels() -> None:
    # labels 0,0,1; images (1,0),(0,1),(1,0); texts of the labels: (1,0),(1,0),(0,1); scale 1.
    # L = log(2e + 1) = 1.862200, M = log(e + 2) = 1.551445.
    # i2t: image 0 logits [1,1,0], positives texts 0,1: -(1 - L) each      -> L - 1
    #      image 1 logits [0,0,1], positives texts 0,1: -(0 - M) each      -> M
    #      image 2 logits [1,1,0], positive text 2:     -(0 - L)           -> L
    # t2i: text 0 logits over images [1,0,1], positives images 0,1: -((1-L) + (0-L))/2 -> L-0.5
    #      text 1 the same                                                           -> L-0.5
    #      text 2 logits [0,1,0], positive image 2: -(0 - M)                          -> M
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    big_l, big_m = math.log(2 * E + 1), math.log(E + 2)
    assert close(
        supervised_contrastive_i2t(images, texts, labels, 1.0), (2 * big_l - 1 + big_m) / 3
    )
    assert close(
        supervised_contrastive_t2i(images, texts, labels, 1.0), (2 * big_l - 1 + big_m) / 3
    )
    # Scale multiplies the cosine: features are normalised first, so rescaling them is a no-op.
    assert close(
        supervised_contrastive_i2t(3 * images, 5 * texts, labels, 1.0),
        (2 * big_l - 1 + big_m) / 3,
    )


# ------------------------------------------------------------------------------ Eq. 7, 14


def test_centroid_contrastive_loss_hand_example() -> None:
    # f = (1,0) (given unnormalised as (3,0)); centroids (1,0),(0,1),(-1,0); tau = 0.5.
    # logits = [1, 0, -1] / 0.5 = [2, 0, -2]; target 0:
    # loss = -2 + log(e^2 + 1 + e^-2) = log(1 + e^-2 + e^-4) = 0.143101
    feats = torch.tensor([[3.0, 0.0]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([0])
    expected = math.log(1 + E**-2 + E**-4)
    assert close(centroid_contrastive_loss(feats, centroids, targets, temperature=0.5), expected)
    # Eq. 14 has the same form over prototypes.
    assert close(prototype_contrastive_loss(feats, centroids, targets, temperature=0.5), expected)
    # target 1: logits [2, 0, -2] -> -0 + log(e^2 + 1 + e^-2) = 2.143101
    assert close(
        centroid_contrastive_loss(feats, centroids, torch.tensor([1]), temperature=0.5),
        2 + expected,
    )


def test_centroid_loss_reductions() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    per_image = centroid_contrastive_loss(feats, centroids, targets, reduction="none")
    # tau 0.05: image 0 logits [20, 0] -> log(1 + e^-20); image 1 logits [0, 20] -> 20 + same.
    assert close(per_image[0], math.log1p(E**-20))
    assert close(per_image[1], 20 + math.log1p(E**-20), tol=1e-4)
    assert close(centroid_contrastive_loss(feats, centroids, targets, reduction="sum"), 20.0, 1e-4)
    assert close(centroid_contrastive_loss(feats, centroids, targets), 10.0, 1e-4)


# ------------------------------------------------------------------------------ Eq. 8


def hard_instance_bank() -> tuple[torch.Tensor, torch.Tensor]:
    # Query f = (1,0). Instances (unit vectors, angle -> similarity to f):
    #   ID 0:   0 deg -> 1.0,   60 deg -> 0.5        hardest positive = 0.5 (lowest)
    #   ID 1:  90 deg -> 0.0,  120 deg -> -0.5       hardest negative = 0.0 (highest)
    #   ID 2: 180 deg -> -1.0,  45 deg -> 0.707107   hardest negative = 0.707107 (highest)
    angles = [0, 90, 180, 60, 120, 45]  # interleaved so the grouping is not by position
    labels = [0, 1, 2, 0, 1, 2]
    return torch.tensor([unit(a) for a in angles]), torch.tensor(labels)


def test_hard_instance_loss_picks_hardest_positive_and_negatives() -> None:
    bank, labels = hard_instance_bank()
    feats = torch.tensor([[1.0, 0.0]])
    targets = torch.tensor([0])
    s = math.sqrt(0.5)
    # tau = 1: softmax over [0.5 (pos), 0.0, 0.707107]:
    # loss = -0.5 + log(e^0.5 + e^0 + e^0.707107) = -0.5 + log(1.648721 + 1 + 2.028115)
    #      = -0.5 + 1.542608 = 1.042608
    expected = -0.5 + math.log(E**0.5 + 1 + E**s)
    loss = hard_instance_loss(feats, bank, labels, targets, temperature=1.0)
    assert close(loss, expected)
    # Other choices give different numbers (so the test discriminates):
    easiest_positive = -1.0 + math.log(E**1.0 + 1 + E**s)  # positive = 1.0
    easiest_negatives = -0.5 + math.log(E**0.5 + E**-0.5 + E**-1.0)  # negatives = minima
    for wrong in (easiest_positive, easiest_negatives):
        assert abs(float(loss) - wrong) > 1e-2
    # tau = 0.05 (paper): logits [10, 0, 14.142136]
    expected_paper = -10 + math.log(E**10 + 1 + E ** (s / 0.05))
    assert close(hard_instance_loss(feats, bank, labels, targets), expected_paper, 1e-4)


def test_hard_instance_loss_batch_and_absent_ids() -> None:
    bank, labels = hard_instance_bank()
    # Second query g = (0,1): similarities by angle = sin(angle):
    #   ID 0: 0 deg -> 0, 60 deg -> 0.866025; ID 1: 90 -> 1, 120 -> 0.866025;
    #   ID 2: 180 -> 0, 45 -> 0.707107. Target 1: hard positive 0.866025 (lowest of ID 1),
    #   hard negatives 0.866025 (ID 0), 0.707107 (ID 2).
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1])
    r3, s = math.sqrt(3) / 2, math.sqrt(0.5)
    per_image = hard_instance_loss(feats, bank, labels, targets, temperature=1.0, reduction="none")
    assert close(per_image[0], -0.5 + math.log(E**0.5 + 1 + E**s))
    assert close(per_image[1], -r3 + math.log(E**r3 + E**r3 + E**s))
    # An ID that owns no instance (labels 0 and 2 only) takes no part in the softmax:
    # query (1,0), target 0: [0.5 (pos), 0.707107 (ID 2)]
    keep = labels != 1
    loss = hard_instance_loss(feats[:1], bank[keep], labels[keep], targets[:1], temperature=1.0)
    assert close(loss, -0.5 + math.log(E**0.5 + E**s))


def test_hard_instance_loss_gradient_reaches_features() -> None:
    bank, labels = hard_instance_bank()
    feats = torch.tensor([[1.0, 0.2]], requires_grad=True)
    hard_instance_loss(feats, bank, labels, torch.tensor([0])).backward()
    assert feats.grad is not None
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ Eq. 9, 10, 15


def test_icdl_loss() -> None:
    # 0.8 * 1 + 0.2 * 2 = 1.2
    assert close(icdl_loss(torch.tensor(1.0), torch.tensor(2.0), 0.8), 1.2)


def test_image_text_cross_entropy_hand_example() -> None:
    # p(x) = (1,0) (given as (2,0)); texts (1,0),(0,1); target 0; scale 1 -> logits [1, 0].
    # log p = [1 - L, -L] with L = log(1 + e) = 1.313262; smoothed target (eps 0.1, K 2):
    # q = [0.95, 0.05] -> loss = -(0.95 (1 - L) + 0.05 (-L)) = L - 0.95 = 0.363262
    proj = torch.tensor([[2.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = image_text_cross_entropy(proj, texts, torch.tensor([0]), 1.0, label_smoothing=0.1)
    assert close(loss, math.log(1 + E) - 0.95)
    # Without smoothing it is plain cross-entropy: L - 1 = 0.313262
    loss = image_text_cross_entropy(proj, texts, torch.tensor([0]), 1.0, label_smoothing=0.0)
    assert close(loss, math.log(1 + E) - 1)


# ------------------------------------------------------------------------------ Eq. 17


def test_gid_classifier_loss_hand_example() -> None:
    # logits [2, 0], target 0 -> log(1 + e^-2) = 0.126928
    assert close(gid_classifier_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0])), 0.126928)


def test_cosine_classifier_logits() -> None:
    # f = (3,4) -> (0.6, 0.8); phi = (1,0), (0,2) -> (0,1); cos = [0.6, 0.8]; / 0.05 = [12, 16]
    classifier = CosineClassifier(n_classes=2, dim=2, temperature=0.05)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    logits = classifier(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(logits, torch.tensor([[12.0, 16.0]]))


def test_gid_classifier_on_detached_features_leaves_backbone_untouched() -> None:
    torch.manual_seed(0)
    backbone = torch.nn.Linear(4, 3)
    classifier = CosineClassifier(n_classes=5, dim=3)
    images, gids = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    feats = backbone(images)
    gid_classifier_loss(classifier(feats.detach()), gids).backward()
    assert backbone.weight.grad is None and backbone.bias.grad is None
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ Eq. 19


def test_ical_targets_hand_example() -> None:
    # gids 0, 2, 4 share pseudo-label 0; gids 1 and 3 are alone; gids 5, 6 unassociated (-1).
    pseudo = torch.tensor([0, 1, 0, 2, 0, -1, -1])
    gids = torch.tensor([0, 4, 1, 5])
    q, negative = ical_targets(gids, pseudo, n_gids=7, eps=0.8)
    # gid 0: G+ = {0, 2, 4}, G = 3: q(0) = 0.2 + 0.8/3 = 0.466667, q(2) = q(4) = 0.266667
    third = 0.8 / 3
    torch.testing.assert_close(q[0], torch.tensor([0.2 + third, 0, third, 0, third, 0, 0]))
    torch.testing.assert_close(q[1], torch.tensor([third, 0, third, 0, 0.2 + third, 0, 0]))
    assert negative[0].tolist() == [False, True, False, True, False, True, True]
    # gid 1: G+ = {1} -> one-hot, every other gid negative.
    torch.testing.assert_close(q[2], F.one_hot(torch.tensor(1), 7).float())
    assert negative[2].tolist() == [True, False, True, True, True, True, True]
    # gid 5 (label -1): -1 is "unassociated", not a shared label: gid 6 is a negative.
    torch.testing.assert_close(q[3], F.one_hot(torch.tensor(5), 7).float())
    assert negative[3].tolist() == [True, True, True, True, True, False, True]


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.8, 1.0])
def test_ical_targets_rows_sum_to_one(eps: float) -> None:
    generator = torch.Generator().manual_seed(1)
    n_gids = 40
    pseudo = torch.randint(-1, 15, (n_gids,), generator=generator)
    gids = torch.arange(n_gids)  # every gid, so empty and non-empty G+ both occur
    q, negative = ical_targets(gids, pseudo, n_gids, eps=eps)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n_gids))
    assert (q[negative] == 0).all() and (q[~negative] > 0).all()
    assert not negative[gids, gids].any()
    # q(y) is the largest entry of its row and equals 1 exactly when G+ is only {y}
    alone = (~negative).sum(dim=1) == 1
    assert alone.any() and (~alone).any()
    torch.testing.assert_close(q[gids, gids][alone], torch.ones(int(alone.sum())))


# ------------------------------------------------------------------------------ Eq. 18


def test_ical_loss_hand_example() -> None:
    # One image of gid 0, G+ = {0, 1}, G- = {2, 3}, eps 0.8 -> q = [0.6, 0.4, 0, 0].
    # s = [2, 1, 0, -1]; negatives: N = e^0 + e^-1 = 1.367879
    # g=0: log(e^2 / (e^2 + N)) = 2 - log(8.756935) = -0.169844
    # g=1: log(e^1 / (e^1 + N)) = 1 - log(4.086161) = -0.407594
    # loss = 0.6 * 0.169844 + 0.4 * 0.407594 = 0.264944
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    q, negative = ical_targets(torch.tensor([0]), torch.tensor([0, 0, 1, 2]), 4, eps=0.8)
    torch.testing.assert_close(q, torch.tensor([[0.6, 0.4, 0.0, 0.0]]))
    n = 1 + E**-1
    expected = -(0.6 * (2 - math.log(E**2 + n)) + 0.4 * (1 - math.log(E + n)))
    assert close(ical_loss(logits, q, negative), expected)
    assert close(ical_loss(logits, q, negative), 0.264944)


def test_ical_loss_reduces_to_cross_entropy_without_positives() -> None:
    # With G+ = {y} the denominator holds y and all other gids: plain cross-entropy.
    torch.manual_seed(0)
    logits, gids = torch.randn(5, 8) * 3, torch.tensor([0, 3, 7, 2, 2])
    q, negative = ical_targets(gids, torch.arange(8), 8)
    torch.testing.assert_close(ical_loss(logits, q, negative), F.cross_entropy(logits, gids))


def test_ical_loss_is_stable_and_handles_no_negatives() -> None:
    logits = torch.tensor([[3000.0, -2000.0, 2999.0]], requires_grad=True)
    q, negative = ical_targets(torch.tensor([0]), torch.tensor([0, 1, 2]), 3)
    loss = ical_loss(logits, q, negative)
    # -log(e^3000 / (e^3000 + e^-2000 + e^2999)) = log(1 + e^-1) = 0.313262 (float32 spacing
    # at 3000 is 2.4e-4, hence the tolerance); a naive exp() would overflow to inf / nan.
    assert close(loss, math.log(1 + E**-1), tol=1e-3)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # All gids associated: no negatives, each positive's ratio is 1 -> loss 0, finite grads.
    logits = torch.tensor([[1.0, 2.0]], requires_grad=True)
    q, negative = ical_targets(torch.tensor([0]), torch.tensor([0, 0]), 2)
    loss = ical_loss(logits, q, negative)
    loss.backward()
    assert close(loss, 0.0) and torch.isfinite(logits.grad).all()


def test_ical_with_frozen_classifier_trains_features_only() -> None:
    torch.manual_seed(0)
    backbone = torch.nn.Linear(4, 3)
    classifier = CosineClassifier(n_classes=4, dim=3)
    images, gids = torch.randn(4, 4), torch.tensor([0, 1, 2, 3])
    q, negative = ical_targets(gids, torch.tensor([0, 0, 1, 1]), 4)
    feats = backbone(images)
    ical_loss(classifier(feats, frozen_weights=True), q, negative).backward()
    assert classifier.weight.grad is None
    assert backbone.weight.grad is not None and backbone.weight.grad.abs().sum() > 0


def test_gid_and_ical_in_one_graph_split_their_gradients() -> None:
    # Eq. 20 from E_adv: L_GID (classifier only) + L_ICAL (backbone only) in one backward.
    torch.manual_seed(0)
    backbone = torch.nn.Linear(4, 3)
    classifier = CosineClassifier(n_classes=4, dim=3)
    images, gids = torch.randn(4, 4), torch.tensor([0, 1, 2, 3])
    q, negative = ical_targets(gids, torch.tensor([0, 0, 1, 1]), 4)

    def grads(use_gid: bool, use_ical: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for p in (*backbone.parameters(), classifier.weight):
            p.grad = torch.zeros_like(p)
        feats = backbone(images)
        loss = torch.zeros(())
        if use_gid:
            loss = loss + gid_classifier_loss(classifier(feats.detach()), gids)
        if use_ical:
            loss = loss + ical_loss(classifier(feats, frozen_weights=True), q, negative)
        loss.backward()
        return backbone.weight.grad.clone(), classifier.weight.grad.clone()

    both_backbone, both_classifier = grads(True, True)
    gid_backbone, gid_classifier = grads(True, False)
    ical_backbone, ical_classifier = grads(False, True)
    assert gid_backbone.abs().sum() == 0 and ical_classifier.abs().sum() == 0
    torch.testing.assert_close(both_backbone, ical_backbone)
    torch.testing.assert_close(both_classifier, gid_classifier)


def test_batch_hard_triplet_takes_each_anchors_hardest_pair() -> None:
    from ccafl.losses import batch_hard_triplet_loss

    torch.manual_seed(0)
    feats = torch.randn(8, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])  # label 3 has no positive: left out
    expected = []
    for a in range(8):
        pos = [
            torch.dist(feats[a], feats[j]) for j in range(8) if j != a and labels[j] == labels[a]
        ]
        neg = [torch.dist(feats[a], feats[j]) for j in range(8) if labels[j] != labels[a]]
        if pos:
            expected.append(torch.nn.functional.softplus(max(pos) - min(neg)))
    got = batch_hard_triplet_loss(feats, labels)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    single = batch_hard_triplet_loss(feats[:2], torch.tensor([0, 0]))  # no negative at all
    assert single.item() == 0.0 and single.requires_grad is False


def test_batch_hard_triplet_step_brings_positives_closer_than_negatives() -> None:
    from ccafl.losses import batch_hard_triplet_loss

    torch.manual_seed(1)
    feats = torch.randn(12, 4, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(3)
    before = batch_hard_triplet_loss(feats, labels)
    before.backward()
    with torch.no_grad():
        stepped = feats - 0.5 * feats.grad
    assert batch_hard_triplet_loss(stepped, labels) < before


def test_person_id_loss_is_label_smoothed_cross_entropy() -> None:
    """-(1 - eps) log p_y - eps / C sum_c log p_c, averaged over the batch."""
    from ccafl.losses import person_id_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    log_p = torch.log_softmax(logits, dim=1)
    eps = 0.1
    by_hand = -((1 - eps) * log_p[[0, 1], labels] + eps / 3 * log_p.sum(dim=1)).mean()
    torch.testing.assert_close(person_id_loss(logits, labels, eps), by_hand)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(person_id_loss(logits, labels, 0.0), plain)
