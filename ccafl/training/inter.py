"""Stage 3 (paper Eq. 12-16, 18-20): one inter-camera epoch, run as one Snakemake job.

Every epoch: un-augmented features -> gid centroids -> association graph (Eq. 12) ->
pseudo-labels -> prototype memory (Eq. 13) -> one epoch of L_IPCL + L_i2tce_inter + L_GID,
plus L_ICAL from E_adv. The cross-camera person id is never read here; association quality is
measured by the caller from the diagnostics-only truth table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ccafl import distributed
from ccafl.association.pseudo_labels import (
    Association,
    ImageClusters,
    associate_identities,
    given_association,
    refined_clusters,
)
from ccafl.errors import UserError
from ccafl.losses import (
    guiding_loss,
    ical_loss,
    ical_targets,
    image_text_cross_entropy,
    prototype_contrastive_loss,
    weighted_cluster_contrastive_loss,
)
from ccafl.memory import PrototypeMemory, class_mean_features
from ccafl.settings import Settings
from ccafl.training.alignment import CHECKPOINT_KEY as CAMERA_HEAD_KEY
from ccafl.training.alignment import CameraAlignment
from ccafl.training.common import LossLog
from ccafl.training.loop import BatchLosses, epoch_loader, train_epoch, train_features
from ccafl.training.person_id import CHECKPOINT_KEY as PERSON_HEAD_KEY
from ccafl.training.person_id import PersonClassifier, person_terms
from ccafl.training.schedule import active_losses
from ccafl.training.state import TrainingData, TrainingState

log = logging.getLogger(__name__)


def label_text_features(text: torch.Tensor, gid_labels: np.ndarray) -> torch.Tensor:
    """Eq. 15: the text feature of a pseudo-label is the mean of its gids' t_g."""
    labels = torch.as_tensor(gid_labels)
    return class_mean_features(text, labels, int(labels.max()) + 1)


def inter_epoch(
    state: TrainingState,
    data: TrainingData,
    association: Association,
    features: torch.Tensor,
    epoch: int,
    loss_log: LossLog,
    alignment: CameraAlignment | None = None,
    person: PersonClassifier | None = None,
) -> None:
    """One stage-3 epoch on the epoch's pseudo-labels: L_inter (Eq. 16), plus L_ICAL from
    E_adv (Eq. 18), prototypes updated per pseudo-label (Eq. 13); CALR's camera loss and
    CLIP-ReID's person ID loss where their heads are given."""
    train = state.settings.train
    active = active_losses(epoch, train)
    device = state.device
    image_labels = torch.as_tensor(association.image_labels)
    n_labels = association.n_labels
    prototypes = PrototypeMemory.from_features(features, image_labels).to(device)
    gids = torch.as_tensor(data.gids)
    cameras = torch.as_tensor(np.array(data.cameras))
    refined = isinstance(association, ImageClusters)
    if refined:
        # Clusters of images: a cluster's text is the mean of its images' t_g (Eq. 15 per
        # image); no gid-level label, so no L_ICAL; camera-entropy weights after the warm-up.
        label_text = (
            None
            if data.text_features is None
            else class_mean_features(data.text_features[gids], image_labels, n_labels)
        )
        clusters = state.settings.clusters
        first = train.intra_epochs + 1 + clusters.weights_after
        weights = torch.as_tensor(association.weights) if epoch >= first else None
        if epoch > train.intra_epochs + clusters.alignment_epochs:
            alignment = None  # CALR: the camera loss in the first stage-B epochs only
    else:
        gid_labels = torch.as_tensor(association.gid_labels).to(device)
        label_text = (
            None
            if data.text_features is None
            else label_text_features(data.text_features, association.gid_labels)
        )
    label_text = None if label_text is None else label_text.to(device)
    guide = state.settings.fgdi if data.domain_text is not None else None
    triplet = float(state.settings.fgdi.get("triplet", 0.0))  # DG mode only (CLIP-ReID's)

    def batch_losses(f: torch.Tensor, p: torch.Tensor, index: torch.Tensor) -> BatchLosses:
        targets = image_labels[index].to(device)
        batch_gids = gids[index].to(device)
        memory = prototypes.prototype_memory()
        if refined:
            ipcl = weighted_cluster_contrastive_loss(f, memory, targets, weights, train.temperature)
        else:
            ipcl = prototype_contrastive_loss(f, memory, targets, train.temperature)
        terms = {"loss_ipcl": ipcl}
        if active.i2tce:
            terms["loss_i2tce"] = image_text_cross_entropy(
                p, label_text, targets, data.logit_scale, train.label_smoothing
            )
        if guide is not None:  # CLIP-FGDI: (1 - beta) L_i2tce + beta L_apn
            if "loss_i2tce" in terms:
                terms["loss_i2tce"] = (1 - guide.beta) * terms["loss_i2tce"]
            relevant = data.domain_text[batch_gids.cpu()].to(device)
            terms["loss_apn"] = guide.beta * guiding_loss(
                p, label_text[targets], relevant, guide.apn_sign
            )
        terms.update(person_terms(f, targets, person, triplet))
        if alignment is not None:
            terms["loss_camera"] = alignment.loss(f, cameras[index].to(device))
        if active.ical and not refined:
            q, negatives = ical_targets(batch_gids, gid_labels, data.n_gids, train.eps)
            logits = state.classifier(f, frozen_weights=True)
            terms["loss_ical"] = ical_loss(logits, q, negatives)

        def update_memory(f: torch.Tensor) -> None:
            for head in (person, alignment):
                if head is not None:
                    head.step()  # after the backbone step's backward, as the engine runs it
            gather = distributed.all_gather_cat
            prototypes.update(
                gather(F.normalize(f.detach(), dim=1)), gather(targets), train.momentum
            )

        return BatchLosses(sum(terms.values()), terms, batch_gids, update_memory)

    def make_loader():
        return epoch_loader(state, data, association.image_labels, epoch)

    train_epoch(state, epoch, "inter", make_loader, batch_losses, loss_log)
    assert n_labels == prototypes.n_labels


def refine_epoch(
    settings: Settings, data: TrainingData, features: torch.Tensor, epoch: int
) -> ImageClusters:
    """CALR's stage-B labels of an epoch (``train.labels: refined``), against the per-camera
    labels of the training table (stage A's clusters in the unsupervised mode)."""
    clusters = settings.clusters
    found = refined_clusters(
        features,
        data.cameras,
        data.train["intra_id"].to_numpy(),
        k=clusters.k,
        min_similarity=clusters.min_similarity,
        min_size=clusters.min_size,
        pivot=clusters.pivot,
        refine=clusters.get("refine", True),  # runs configured before the key: on
    )
    if found.n_trained == 0:
        raise UserError(
            f"epoch {epoch}: no global cluster of clusters.min_size={clusters.min_size} images "
            f"at clusters.min_similarity={clusters.min_similarity}: lower one of them"
        )
    return found


def camera_alignment(
    settings: Settings, state: TrainingState, data: TrainingData, epochs: list[int]
) -> CameraAlignment | None:
    """CALR's camera classifier, for a refined-cluster run whose alignment epochs are not all
    behind it: restored from the previous checkpoint, or new at the first stage-3 epoch."""
    train = settings.train
    if train.labels != "refined" or settings.clusters.alignment_epochs == 0:
        return None
    if epochs[0] > train.intra_epochs + settings.clusters.alignment_epochs:
        return None
    return CameraAlignment.create(
        state.module.feat_dim,
        int(np.max(data.cameras)) + 1,
        train.lr,
        train.weight_decay,
        settings.clusters.alignment_loss,
        state.device,
        saved=state.extra.get(CAMERA_HEAD_KEY),
    )


def person_classifier(
    settings: Settings, state: TrainingState, n_labels: int
) -> PersonClassifier | None:
    """CLIP-ReID's person classifier for ``fgdi.id_loss`` > 0 (``train.labels: supervised``,
    checked with the config): restored from the previous checkpoint, or new at the first
    stage-3 epoch."""
    weight = float(settings.fgdi.get("id_loss", 0.0))
    if weight == 0:
        return None
    train = settings.train
    return PersonClassifier.create(
        state.module.feat_dim,
        n_labels,
        train.lr,
        train.weight_decay,
        weight,
        train.label_smoothing,
        state.device,
        seed=train.seed,
        saved=state.extra.get(PERSON_HEAD_KEY),
    )


def run_inter_epochs(
    settings: Settings,
    data: TrainingData,
    previous_checkpoint: str | Path,
    clip_path: str | Path | None,
    epochs: list[int],
    out_dirs: list[str | Path],
    *,
    given_labels: np.ndarray | None = None,
    on_epoch_end=None,
) -> list[dict]:
    """Resume from the checkpoint of ``epochs[0] - 1`` and run consecutive inter epochs in
    one process, writing every epoch's artifacts to its own folder as it finishes.

    Per epoch: features, association (Eq. 12; or ``given_labels``, one pseudo-label per gid,
    for the supervised reference run), one epoch of training, checkpoint, log. Running a block
    of epochs here equals running them one job each (the RNG state carries over exactly as a
    checkpoint restores it). ``on_epoch_end(epoch, association, metrics)`` runs after each
    epoch's artifacts are written (the CLI adds diagnostics there).
    """
    if len(epochs) != len(out_dirs) or not epochs:
        raise ValueError("need one output folder per epoch, and at least one epoch")
    if list(epochs) != list(range(epochs[0], epochs[0] + len(epochs))):
        raise ValueError(f"epochs must be consecutive, got {epochs}")
    start = time.perf_counter()
    state = TrainingState.resume(previous_checkpoint, settings, clip_path, data.n_gids)
    if state.epoch != epochs[0] - 1:
        raise ValueError(
            f"{previous_checkpoint} holds epoch {state.epoch}, "
            f"but epoch {epochs[0]} needs {epochs[0] - 1}"
        )
    if settings.train.image_cache:
        data.cache_images(settings.input.size)
    alignment = camera_alignment(settings, state, data, epochs)
    person = None  # its size is the first epoch's label count
    startup = time.perf_counter() - start
    results = []
    for epoch, out_dir in zip(epochs, out_dirs, strict=True):
        epoch_start = time.perf_counter()
        timings = {"startup_s": startup}
        features = train_features(state, data, f"epoch {epoch} features")
        if settings.train.labels == "refined":
            association = refine_epoch(settings, data, features, epoch)
        elif given_labels is None:
            association = associate_identities(
                features,
                data.gids,
                data.cameras,
                data.n_gids,
                settings.train.threshold,
                camera_centering=settings.train.camera_centering,
                search=settings.train.association_search,
                domains=data.train["domain"].to_numpy() if "domain" in data.train else None,
            )
        else:
            association = given_association(given_labels, data.gids, data.n_gids)
        timings["association_s"] = time.perf_counter() - epoch_start
        out_dir = Path(out_dir)
        if distributed.is_main():  # every rank computed the same association
            association.write(out_dir, data.train)
        tick = time.perf_counter()
        loss_log = LossLog()
        if person is None:
            person = person_classifier(settings, state, association.n_labels)
        inter_epoch(state, data, association, features, epoch, loss_log, alignment, person)
        state.epoch = epoch
        timings["training_s"] = time.perf_counter() - tick
        heads = {CAMERA_HEAD_KEY: alignment, PERSON_HEAD_KEY: person}
        extra = {key: head.state_dict() for key, head in heads.items() if head is not None}
        state.save(out_dir / "checkpoint.pt", **extra)
        loss_log.write(out_dir / "log.parquet")
        n_clusters = association.n_labels
        metrics = {
            "epoch": epoch,
            "n_gids": data.n_gids,
            "n_clusters": n_clusters,
            "n_edges": int(len(association.edges)),
            **loss_log.epoch_means(epoch),
            **timings,
            "seconds": time.perf_counter() - epoch_start + startup,
        }
        if isinstance(association, ImageClusters):
            metrics["n_trained_images"] = association.n_trained
        startup = 0.0  # paid once per job
        log.info(
            "epoch %d (inter): %d gids -> %d clusters, loss %.4g, %.1f s",
            epoch,
            data.n_gids,
            n_clusters,
            metrics["loss"],
            metrics["seconds"],
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, association, metrics)
        results.append(metrics)
    return results
