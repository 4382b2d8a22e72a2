"""Stage 2 (paper Eq. 4-11, 17): intra-camera discriminative learning, epochs 1..E_intra.

Every image is scored against its own camera's centroid and instance memories (L_ICDL) and its
own camera's text features (L_i2tce_intra), and trains the global-ID classifier on detached
features (L_GID). A batch holds identities of one camera (``train.intra_batches: camera``) or
of several cameras (``mixed``: the paper's per-camera sums of Eq. 7-9 over one batch); the
losses are the same per image either way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ccafl import distributed
from ccafl.io import write_json
from ccafl.losses import (
    centroid_contrastive_loss,
    hard_instance_loss,
    icdl_loss,
    image_text_cross_entropy,
)
from ccafl.memory import IntraCameraMemories, class_mean_features
from ccafl.seeding import seed_everything
from ccafl.settings import Settings, TrainSection
from ccafl.training.common import LossLog
from ccafl.training.loop import (
    BatchLosses,
    epoch_loader,
    iterations_per_epoch,
    train_epoch,
    train_features,
)
from ccafl.training.schedule import active_losses
from ccafl.training.state import TrainingData, TrainingState

log = logging.getLogger(__name__)


def per_camera_losses(
    f: torch.Tensor,
    p: torch.Tensor,
    batch_cameras: torch.Tensor,
    targets: torch.Tensor,
    batch_gids: torch.Tensor,
    memories: IntraCameraMemories,
    data: TrainingData,
    train: TrainSection,
    active,
) -> dict[str, torch.Tensor]:
    """Stage-2 loss terms of a batch, each image against its own camera only (Eq. 7-9).

    Per camera present in the batch the terms are summed over its images; every term is then
    divided by the batch size, so a one-camera batch gives the plain batch means.
    """
    sums: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        sums[name] = sums[name] + value if name in sums else value

    if active.i2tce:  # only then: stage A's data has neither texts nor gids
        text = data.text_features.to(f.device)
        gids_of_camera = data.gids_of_camera
    for camera in torch.unique(batch_cameras).tolist():
        rows = batch_cameras == camera
        f_c, y_c = f[rows], targets[rows]
        add(
            "loss_intra1",
            centroid_contrastive_loss(
                f_c, memories.centroid_memory(camera), y_c, train.temperature, "sum"
            ),
        )
        if active.intra2:
            bank, bank_labels = memories.instance_memory(camera)
            add(
                "loss_intra2",
                hard_instance_loss(f_c, bank, bank_labels, y_c, train.temperature, "sum"),
            )
        if active.i2tce:
            # Candidates are the gids of the image's own camera (Eq. 9): a contiguous range.
            candidates = gids_of_camera[camera].to(f.device)
            add(
                "loss_i2tce",
                image_text_cross_entropy(
                    p[rows],
                    text[candidates],
                    batch_gids[rows] - int(candidates[0]),
                    data.logit_scale,
                    train.label_smoothing,
                    "sum",
                ),
            )
    return {name: value / len(f) for name, value in sums.items()}


def camera_memory_update(
    memories: IntraCameraMemories,
    batch_cameras: torch.Tensor,
    targets: torch.Tensor,
    index: torch.Tensor,
    momentum: float,
):
    """A batch's memory update (Eq. 5-6), applied by the engine after the backbone step."""

    def update(f: torch.Tensor) -> None:
        # Under torchrun every rank applies the whole global batch: memories stay identical.
        gather = distributed.all_gather_cat
        memories.update(
            gather(F.normalize(f.detach(), dim=1)),
            gather(batch_cameras),
            gather(targets),
            gather(index.to(batch_cameras.device)),
            momentum,
        )

    return update


def intra_epoch(
    state: TrainingState,
    data: TrainingData,
    memories: IntraCameraMemories,
    epoch: int,
    loss_log: LossLog,
) -> None:
    """One stage-2 epoch: L_intra (Eq. 11) per batch, memories updated per camera (Eq. 5-6)."""
    train = state.settings.train
    active = active_losses(epoch, train)
    device = state.device
    cameras = torch.as_tensor(data.cameras)
    intra_ids = torch.as_tensor(data.train["intra_id"].to_numpy())
    gids = torch.as_tensor(data.gids)
    groups = data.cameras if train.intra_batches == "camera" else None

    def batch_losses(f: torch.Tensor, p: torch.Tensor, index: torch.Tensor) -> BatchLosses:
        batch_cameras = cameras[index].to(device)
        targets = intra_ids[index].to(device)
        batch_gids = gids[index].to(device)
        terms = per_camera_losses(
            f, p, batch_cameras, targets, batch_gids, memories, data, train, active
        )
        loss = terms["loss_intra1"]
        if active.intra2:
            loss = icdl_loss(terms["loss_intra1"], terms["loss_intra2"], train.lam)
        if active.i2tce:
            loss = loss + terms["loss_i2tce"]

        update = camera_memory_update(memories, batch_cameras, targets, index, train.momentum)
        return BatchLosses(loss, terms, batch_gids, update)

    def make_loader():
        return epoch_loader(state, data, data.gids, epoch, groups=groups)

    train_epoch(state, epoch, "intra", make_loader, batch_losses, loss_log)


def initial_features(state: TrainingState, data: TrainingData) -> torch.Tensor:
    """f of every training image at the start of training, normalised the way training is.

    The BN-necks are calibrated on the un-augmented training images first (label-free), so
    the memories and the classifier start from features on the same scale as the batch-
    normalised features training scores against them.
    """
    pooled, proj = train_features(state, data, "initial features", which="raw")
    module = state.module
    module.calibrate_necks(pooled, proj)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        features = module.head(pooled.to(state.device), proj.to(state.device)).float().cpu()
    module.train(was_training)
    return features


def run_intra(
    settings: Settings, data: TrainingData, clip_path: str | Path | None, out_dir: str | Path
) -> dict:
    seed_everything(settings.train.seed)
    state = TrainingState.create(settings, clip_path, data.n_gids)
    start = time.perf_counter()
    if settings.train.image_cache:
        data.cache_images(settings.input.size)
    features = initial_features(state, data)
    cameras = torch.as_tensor(data.cameras)
    intra_ids = torch.as_tensor(data.train["intra_id"].to_numpy())
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids).to(state.device)
    # Warm start of the classifier from the gid centroids (ClusterContrast-style init).
    state.classifier.init_from_centroids(
        class_mean_features(features, torch.as_tensor(data.gids), data.n_gids).to(state.device)
    )
    loss_log = LossLog()
    epoch_seconds = []
    for epoch in range(1, settings.train.intra_epochs + 1):
        tick = time.perf_counter()
        intra_epoch(state, data, memories, epoch, loss_log)
        state.epoch = epoch
        epoch_seconds.append(time.perf_counter() - tick)
        log.info("epoch %d (intra): %s", epoch, _fmt(loss_log.epoch_means(epoch)))
    out_dir = Path(out_dir)
    state.save(out_dir / "checkpoint.pt", memories=memories.state_dict())
    loss_log.write(out_dir / "log.parquet")
    metrics = {
        "epochs": settings.train.intra_epochs,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "seconds": time.perf_counter() - start,
        "iterations_per_epoch": iterations_per_epoch(settings.train, len(data.train)),
    }
    if distributed.is_main():
        write_json(metrics, out_dir / "metrics.json")
    return metrics


def _fmt(terms: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
