"""CCAFL loss functions, one per equation of the paper (section III).

Every function here is pure: tensors in, a scalar loss (or targets) out, no module state. The
memories that supply centroids, instances and prototypes live in :mod:`ccafl.memory`, the
global-ID classifier in :mod:`ccafl.models.classifier`.

Index (paper equation -> function):

=========  ===========================================================
Eq. 1      :func:`supervised_contrastive_i2t`
Eq. 2      :func:`supervised_contrastive_t2i`
Eq. 3      :func:`prompt_loss`
Eq. 7      :func:`centroid_contrastive_loss`       (L_intra1)
Eq. 8      :func:`hard_instance_loss`              (L_intra2)
Eq. 9, 15  :func:`image_text_cross_entropy`        (L_i2tce intra / inter)
Eq. 10     :func:`icdl_loss`                       (L_ICDL)
Eq. 14     :func:`prototype_contrastive_loss`      (L_IPCL)
Eq. 17     :func:`gid_classifier_loss`             (L_GID)
Eq. 18     :func:`ical_loss`                       (L_ICAL)
Eq. 19     :func:`ical_targets`                    (q(g), G-)
CALR       :func:`weighted_cluster_contrastive_loss` (L_inter, camera-entropy weights)
CALR       :func:`camera_adversarial_loss`, :func:`reverse_gradient` (camera alignment)
=========  ===========================================================

Reductions: the paper writes its losses as sums over cameras (Eq. 1, 2, 7-9) or over the batch
(Eq. 17, 18). Every image belongs to exactly one camera, so those sums only say "each image is
scored against its own camera's memory"; we average over the images of the batch (the usual
PyTorch convention, which keeps the loss scale independent of the batch size). Functions that a
caller may need to combine over several per-camera groups take ``reduction`` ("mean", "sum" or
"none") so that the caller can sum per-camera sums and divide by the batch size once.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]

__all__ = [
    "camera_adversarial_loss",
    "centroid_contrastive_loss",
    "gid_classifier_loss",
    "hard_instance_loss",
    "ical_loss",
    "ical_targets",
    "icdl_loss",
    "image_text_cross_entropy",
    "prompt_loss",
    "prototype_contrastive_loss",
    "reverse_gradient",
    "supervised_contrastive_i2t",
    "supervised_contrastive_t2i",
    "weighted_cluster_contrastive_loss",
]


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"unknown reduction {reduction!r}; expected 'mean', 'sum' or 'none'")


# --------------------------------------------------------------------------------------------
# Stage 1: prompt learning (Eq. 1-3)
# --------------------------------------------------------------------------------------------


def _supervised_contrastive(
    anchor_feats: Tensor,
    candidate_feats: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    logit_scale: float | Tensor,
) -> Tensor:
    """Supervised contrastive loss of each anchor against all candidates of the batch.

    For anchor i: ``-1/|P_i| * sum_{p in P_i} log softmax_k(scale * s(a_i, c_k))[p]`` with
    ``P_i`` the candidates carrying the anchor's label; averaged over the anchors.
    """
    anchor = F.normalize(anchor_feats, dim=1)
    candidates = F.normalize(candidate_feats, dim=1)
    logits = logit_scale * anchor @ candidates.t()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_labels[:, None] == candidate_labels[None, :]).to(log_prob.dtype)
    # Every anchor has at least itself's counterpart as positive in the i2t / t2i setting (the
    # batch's text features are the texts of the batch's own labels); clamp guards misuse.
    mean_log_prob_positive = (positive * log_prob).sum(dim=1) / positive.sum(dim=1).clamp(min=1)
    return -mean_log_prob_positive.mean()


def supervised_contrastive_i2t(
    image_feats: Tensor,
    text_feats: Tensor,
    labels: Tensor,
    logit_scale: float | Tensor,
) -> Tensor:
    """Image-to-text supervised contrastive loss L_i2t (paper Eq. 1).

    Args:
        image_feats: (B, D) image features f^v of the batch (frozen encoder in stage 1).
        text_feats: (B, D) text features f^t of the batch's own labels: row k is the text
            feature of ``labels[k]`` (so a label repeated in the batch has repeated rows).
        labels: (B,) global ICS IDs (gids).
        logit_scale: 1/tau, multiplies the cosine similarity (CLIP's ``logit_scale.exp()``).

    Returns:
        Scalar. For image i the softmax runs over the B text features of the batch; the
        positives P_i are the texts with i's label, and ``-log p`` is averaged over P_i (the
        ``1/|P_i|`` of Eq. 1) and then over the B images. The paper's outer ``sum_c`` only
        says images of every camera take part; we average over the batch so the scale does not
        depend on B (the CLIP-ReID convention for this stage-1 loss).
    """
    return _supervised_contrastive(image_feats, text_feats, labels, labels, logit_scale)


def supervised_contrastive_t2i(
    image_feats: Tensor,
    text_feats: Tensor,
    labels: Tensor,
    logit_scale: float | Tensor,
) -> Tensor:
    """Text-to-image supervised contrastive loss L_t2i (paper Eq. 2).

    Same inputs and normalisation as :func:`supervised_contrastive_i2t` with the roles swapped:
    for text i the softmax runs over the B image features of the batch, the positives are the
    images with label ``labels[i]``; ``-log p`` averaged over the positives, then over the B
    texts.
    """
    return _supervised_contrastive(text_feats, image_feats, labels, labels, logit_scale)


def prompt_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    labels: Tensor,
    logit_scale: float | Tensor,
) -> Tensor:
    """Stage-1 prompt-learning loss L_prompt = L_i2t + L_t2i (paper Eq. 3)."""
    return supervised_contrastive_i2t(
        image_feats, text_feats, labels, logit_scale
    ) + supervised_contrastive_t2i(image_feats, text_feats, labels, logit_scale)


# --------------------------------------------------------------------------------------------
# Stage 2: intra-camera discriminative learning (Eq. 7, 8, 10) and alignment (Eq. 9)
# --------------------------------------------------------------------------------------------


def _memory_contrastive_loss(
    feats: Tensor,
    memory: Tensor,
    targets: Tensor,
    temperature: float,
    reduction: Reduction,
) -> Tensor:
    """Cross-entropy of ``s(f, memory_k) / temperature`` against the target row (Eq. 7, 14)."""
    logits = F.normalize(feats, dim=1) @ F.normalize(memory, dim=1).t() / temperature
    return F.cross_entropy(logits, targets, reduction=reduction)


def centroid_contrastive_loss(
    feats: Tensor,
    centroids: Tensor,
    targets: Tensor,
    temperature: float = 0.05,
    reduction: Reduction = "mean",
) -> Tensor:
    """Intra-camera centroid contrastive loss L_intra1 (paper Eq. 7).

    Args:
        feats: (B, D) features f(x) of images that all come from one camera c.
        centroids: (K_c, D) camera c's centroid memory mu_c (one row per intra-camera ID).
        targets: (B,) intra-camera IDs of the images, indices into ``centroids``.
        temperature: tau (paper: 0.05).
        reduction: "mean" over the B images (default), "sum" or "none".

    Both feats and centroids are L2-normalised here, so s(., .) is the cosine similarity; the
    softmax runs over camera c's K_c centroids and the loss is the cross-entropy to the own ID.
    """
    return _memory_contrastive_loss(feats, centroids, targets, temperature, reduction)


def hard_instance_loss(
    feats: Tensor,
    instance_bank: Tensor,
    instance_labels: Tensor,
    targets: Tensor,
    temperature: float = 0.05,
    reduction: Reduction = "mean",
) -> Tensor:
    """Intra-camera hard instance loss L_intra2 (paper Eq. 8).

    Args:
        feats: (B, D) features f(x) of images that all come from one camera c.
        instance_bank: (S, D) camera c's instance memory M^intra (one row per training image).
        instance_labels: (S,) intra-camera ID of each instance row.
        targets: (B,) intra-camera IDs of the images.
        temperature: tau (paper: 0.05).
        reduction: "mean" over the B images (default), "sum" or "none".

    For image x with ID y: the hard positive m+_hard is the instance of ID y with the *lowest*
    cosine similarity to f(x); for every other ID j present in the bank, the hard negative
    m^j_hard is ID j's instance with the *highest* similarity. The softmax runs over
    {m+_hard} and all hard negatives (the K_c terms of Eq. 8's denominator) and the loss is
    ``-log p(m+_hard)``.

    Vectorised over IDs: per-ID maxima and minima of the (B, S) similarity matrix come from
    ``scatter_reduce`` with ``amax`` / ``amin`` along the instance axis. IDs with no instance in
    the bank are masked out of the softmax. Gradient flows to ``feats`` only through the chosen
    (arg-max / arg-min) instances, as the hard-mining formulation intends.
    """
    feats_n = F.normalize(feats, dim=1)
    bank_n = F.normalize(instance_bank, dim=1)
    similarity = feats_n @ bank_n.t()  # (B, S)
    n_ids = int(max(int(instance_labels.max()), int(targets.max()))) + 1
    index = instance_labels.to(torch.long).unsqueeze(0).expand_as(similarity)
    empty = similarity.new_full((similarity.shape[0], n_ids), float("-inf"))
    hardest_negative = empty.scatter_reduce(1, index, similarity, reduce="amax", include_self=False)
    hardest_positive = empty.neg().scatter_reduce(
        1, index, similarity, reduce="amin", include_self=False
    )
    is_target = F.one_hot(targets.to(torch.long), n_ids).bool()
    # Own ID column: hardest positive (lowest similarity); other columns: hardest negative.
    logits = torch.where(is_target, hardest_positive, hardest_negative)
    present = torch.zeros(n_ids, dtype=torch.bool, device=feats.device)
    present[instance_labels.to(torch.long)] = True
    if not bool(present[targets.to(torch.long)].all()):
        raise ValueError("hard_instance_loss: a target ID has no instance in the bank")
    logits = logits.masked_fill(~present.unsqueeze(0), float("-inf")) / temperature
    return F.cross_entropy(logits, targets.to(torch.long), reduction=reduction)


def icdl_loss(l_intra1: Tensor, l_intra2: Tensor, lam: float) -> Tensor:
    """Intra-camera discriminative loss L_ICDL = lam * L_intra1 + (1 - lam) * L_intra2 (Eq. 10).

    ``lam`` is the paper's lambda: 0.8 by default, 0.6 on Market-1501.
    """
    return lam * l_intra1 + (1.0 - lam) * l_intra2


def image_text_cross_entropy(
    proj_feats: Tensor,
    text_feats: Tensor,
    targets: Tensor,
    logit_scale: float | Tensor,
    label_smoothing: float = 0.1,
    reduction: Reduction = "mean",
) -> Tensor:
    """Image-to-text cross-entropy L_i2tce (paper Eq. 9 intra-camera, Eq. 15 inter-camera).

    Args:
        proj_feats: (B, D) CLIP projections p(x) (= f^v(x)) of the images.
        text_feats: (Z, D) candidate text features: in Eq. 9 the t_g of the gids of the images'
            camera (K_c rows), in Eq. 15 one text feature per pseudo-label (mean of its gids'
            t_g).
        targets: (B,) index of each image's own row in ``text_feats``.
        logit_scale: multiplies the cosine similarity (the paper's s(., .) carries no
            temperature; CLIP's learned ``logit_scale.exp()`` is the natural choice).
        label_smoothing: the "smoothed ID label" q_z of Eq. 9 / 15 (0.1).
        reduction: "mean" over the B images (default), "sum" or "none".

    logits = scale * normalise(p(x)) . normalise(t_z); cross-entropy with label smoothing.
    """
    logits = logit_scale * F.normalize(proj_feats, dim=1) @ F.normalize(text_feats, dim=1).t()
    return F.cross_entropy(
        logits, targets.to(torch.long), label_smoothing=label_smoothing, reduction=reduction
    )


# --------------------------------------------------------------------------------------------
# Stage 3: inter-camera learning (Eq. 14)
# --------------------------------------------------------------------------------------------


def prototype_contrastive_loss(
    feats: Tensor,
    prototypes: Tensor,
    targets: Tensor,
    temperature: float = 0.05,
    reduction: Reduction = "mean",
) -> Tensor:
    """Inter-camera prototypical contrastive loss L_IPCL (paper Eq. 14).

    Same form as Eq. 7 (:func:`centroid_contrastive_loss`) but over the Z pseudo-label
    prototypes of the inter-camera memory (all cameras), ``targets`` the pseudo-labels.
    """
    return _memory_contrastive_loss(feats, prototypes, targets, temperature, reduction)


# --------------------------------------------------------------------------------------------
# Global ID classifier and inter-camera adversarial learning (Eq. 17-19)
# --------------------------------------------------------------------------------------------


def gid_classifier_loss(cls_logits: Tensor, gids: Tensor) -> Tensor:
    """Global-ID classification loss L_GID (paper Eq. 17): cross-entropy to the gid.

    ``cls_logits`` come from :class:`ccafl.models.classifier.CosineClassifier` applied to
    *detached* features, so this loss trains the classifier and never the backbone. Averaged
    over the batch (the paper's sum over the N images of the batch).
    """
    return F.cross_entropy(cls_logits, gids.to(torch.long))


def ical_targets(
    gids: Tensor,
    pseudo_labels_of_gids: Tensor,
    n_gids: int,
    eps: float = 0.8,
) -> tuple[Tensor, Tensor]:
    """Soft multi-positive targets q(g) and negative sets G- of ICAL (paper Eq. 19).

    Args:
        gids: (B,) global ICS ID y of each image.
        pseudo_labels_of_gids: (n_gids,) pseudo-label of every gid from the inter-camera
            association (Eq. 12). A negative label (-1) marks an unassociated gid: it has no
            positive but itself.
        n_gids: N_G, the number of global IDs (classifier classes).
        eps: epsilon of Eq. 19, 0 < eps <= 1 (paper: 0.8).

    Returns:
        ``q``: (B, n_gids) float, each row sums to 1. ``negative_mask``: (B, n_gids) bool, True
        on G- (every gid that is neither y nor associated with y).

    Reading of Eq. 19. The paper gives q(y) = 1 - eps + eps/G, q(g) = eps/G for g != y in G+,
    0 on G-, with "G the number of elements in G+". Let k be the number of *other* gids sharing
    y's pseudo-label (other cameras; the association never puts two gids of one camera in a
    component). If G+ excluded y (G = k), the row would sum to
    ``1 - eps + eps/k + k * eps/k = 1 + eps/k``, not a distribution. With G+ *including* y
    (y's own centroid is a positive centroid of the query, and the "g != y and g in G+" case of
    Eq. 19 only makes sense if y is in G+), G = k + 1 and

        sum q = (1 - eps + eps/(k+1)) + k * eps/(k+1) = 1 - eps + eps = 1.

    This is label smoothing of the one-hot gid target over the associated positives: mass
    1 - eps stays on the true (noise-free, intra-camera) label and eps is spread uniformly over
    all k+1 positives. With no associated gid (k = 0) it gives q(y) = 1 - eps + eps = 1, the
    plain one-hot target, with no special case. G- = all gids outside G+.
    """
    gids = gids.to(torch.long)
    labels = pseudo_labels_of_gids.to(torch.long)
    if labels.numel() != n_gids:
        raise ValueError(f"pseudo_labels_of_gids has {labels.numel()} entries, expected {n_gids}")
    own_label = labels[gids]  # (B,)
    associated = (labels.unsqueeze(0) == own_label.unsqueeze(1)) & (own_label.unsqueeze(1) >= 0)
    own = F.one_hot(gids, n_gids).bool()
    positive = associated | own  # G+ including y
    n_positive = positive.sum(dim=1, keepdim=True).to(torch.float32)  # G = k + 1
    q = positive.to(torch.float32) * (eps / n_positive)
    q = q + own.to(torch.float32) * (1.0 - eps)
    return q, ~positive


def ical_loss(cls_logits: Tensor, q: Tensor, negative_mask: Tensor) -> Tensor:
    """Inter-camera adversarial loss L_ICAL (paper Eq. 18).

    Args:
        cls_logits: (B, N_G) global-ID classifier logits s_g = f(x) . phi_g / tau, computed with
            the classifier weights *frozen* (``CosineClassifier(..., frozen_weights=True)``) so
            that the gradient reaches the backbone only.
        q: (B, N_G) soft targets from :func:`ical_targets`.
        negative_mask: (B, N_G) bool, True on G-.

    Returns:
        Scalar ``mean_i -sum_g q_i(g) log( exp(s_g) / (exp(s_g) + sum_{j in G-_i} exp(s_j)) )``.
        Every positive class g competes only with the negatives, not with the other positives,
        so the classifier is pushed to *not* separate associated gids (multi-peaked
        distribution, paper Fig. 5). Computed as ``s_g - logaddexp(s_g, logsumexp_{G-} s_j)``,
        stable for large logits; a row without negatives contributes 0. Averaged over the batch
        (the paper sums over the N images).
    """
    negatives_lse = torch.logsumexp(cls_logits.masked_fill(~negative_mask, float("-inf")), dim=1)
    log_ratio = cls_logits - torch.logaddexp(cls_logits, negatives_lse.unsqueeze(1))
    # q is zero on G-; masking keeps -inf * 0 style NaNs out of rows whose logits overflow.
    weighted = torch.where(q > 0, q * log_ratio, torch.zeros_like(log_ratio))
    return -weighted.sum(dim=1).mean()


# --------------------------------------------------------------------------------------------
# CALR (unsupervised mode; Li et al., arXiv 2403.16450, as its official code computes them)
# --------------------------------------------------------------------------------------------


def weighted_cluster_contrastive_loss(
    feats: Tensor,
    prototypes: Tensor,
    targets: Tensor,
    cluster_weights: Tensor | None = None,
    temperature: float = 0.05,
) -> Tensor:
    """CALR's inter-camera loss: ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over the batch.

    ``l_i`` is the cluster-memory cross-entropy (same form as Eq. 14) and ``w_k`` the
    camera-entropy weight of cluster k (:func:`ccafl.association.clusters.camera_entropy_weights`);
    without weights it is the plain mean. A batch whose clusters all weigh 0 gives 0, not NaN.
    """
    per_sample = _memory_contrastive_loss(feats, prototypes, targets, temperature, "none")
    if cluster_weights is None:
        return per_sample.mean()
    weights = cluster_weights.to(per_sample)[targets]
    total = weights.sum()
    return (weights * per_sample).sum() / total.clamp(min=torch.finfo(total.dtype).tiny)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # noqa: D102
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.alpha * grad, None


def reverse_gradient(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Gradient reversal layer: identity forward, gradient times ``-alpha`` backward.

    Between the embedding and a camera classifier it makes one loss do two things: the
    classifier learns to tell cameras apart, the encoder learns features it cannot (CALR: alpha 1).
    """
    return _ReverseGradient.apply(x, alpha)


def camera_adversarial_loss(
    camera_logits: Tensor, cameras: Tensor, *, form: Literal["nll", "calr_code"] = "nll"
) -> Tensor:
    """Camera-classification loss of the camera-alignment module (fed through the GRL).

    ``nll`` (default) is the cross-entropy of the camera logits, which is what the module is
    meant to compute. ``calr_code`` reproduces CALR's official code, which applies a softmax to
    log-probabilities before a cross-entropy: ``-p_c + log sum_j exp(p_j)`` with p the camera
    probabilities, a bounded loss whose gradient is weak (calr-spec section 3).
    """
    if form == "nll":
        return F.cross_entropy(camera_logits, cameras)
    if form == "calr_code":
        return F.cross_entropy(torch.softmax(F.log_softmax(camera_logits, dim=1), dim=1), cameras)
    raise ValueError(f"camera loss form must be 'nll' or 'calr_code', got {form!r}")


# --------------------------------------------------------------------------------------------
# The DG mode: CLIP-FGDI's domain parts (clip-fgdi-spec.md sections 2-3)
# --------------------------------------------------------------------------------------------


def domain_adversarial_loss(domain_logits: Tensor, domains: Tensor) -> Tensor:
    """Cross-entropy of the domain classifier on (reversed) prompt text features.

    Fed through `reverse_gradient`, the classifier learns to name an identity prompt's source
    dataset while the prompts learn to make that impossible: CLIP-FGDI's domain-invariant
    prompts (its code applies ``CrossEntropyLoss`` to log-softmax outputs, which equals this).
    """
    return F.cross_entropy(domain_logits, domains)


def guiding_loss(
    image_feats: Tensor,
    invariant_text: Tensor,
    relevant_text: Tensor,
    sign: Literal["paper", "code"] = "paper",
) -> Tensor:
    """CLIP-FGDI's bidirectional guiding loss L_apn: a soft-margin triplet in text space.

    ``paper`` (its abstract and pipeline figure): pull an image towards its identity's
    domain-invariant prompt t+, push it from the domain-relevant one t-:
    ``mean log(1 + exp(cos(f, t-) - cos(f, t+)))``. ``code``: the official code's sign, which
    feeds similarities into a distance-form call and so pulls towards t- instead:
    ``mean log(1 + exp(cos(f, t+) - cos(f, t-)))`` (clip-fgdi-spec.md section 3).
    """
    f = F.normalize(image_feats, dim=1)
    pos = (f * F.normalize(invariant_text, dim=1)).sum(dim=1)
    neg = (f * F.normalize(relevant_text, dim=1)).sum(dim=1)
    if sign == "paper":
        return F.softplus(neg - pos).mean()
    if sign == "code":
        return F.softplus(pos - neg).mean()
    raise ValueError(f"fgdi.apn_sign must be 'paper' or 'code', got {sign!r}")


def person_id_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """CLIP-ReID's ID loss (used by CLIP-FGDI in its image-encoder stages): cross-entropy of a
    person classifier's logits to the person label, with label smoothing, averaged over the
    batch."""
    return F.cross_entropy(logits, labels.to(torch.long), label_smoothing=label_smoothing)


def batch_hard_triplet_loss(feats: Tensor, labels: Tensor) -> Tensor:
    """Batch-hard soft-margin triplet (Hermans et al., 2017), as CLIP-ReID and CLIP-FGDI train
    their image encoders: per anchor the farthest same-label and the nearest other-label image
    of the batch, in Euclidean distance of the raw features,
    ``mean log(1 + exp(d(a, p_hard) - d(a, n_hard)))``. An anchor without a positive or a
    negative in the batch is left out (a P x K batch has both for every anchor)."""
    dist = torch.cdist(feats, feats)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feats.device)
    positives, negatives = same & ~eye, ~same
    valid = positives.any(dim=1) & negatives.any(dim=1)
    if not valid.any():
        return feats.sum() * 0.0
    hardest_pos = dist.masked_fill(~positives, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(~negatives, float("inf")).amin(dim=1)
    return F.softplus(hardest_pos[valid] - hardest_neg[valid]).mean()
