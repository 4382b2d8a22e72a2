"""Stage A of the unsupervised mode (``train.camera_labels: clusters``): per-camera clusters.

Where nobody labelled anything, CALR (Li et al., arXiv 2403.16450) first learns each camera on
its own: every epoch each camera's training images are clustered
(:func:`ccafl.association.clusters.cluster_within_cameras`: Jaccard distance, average linkage,
``N_c // clusters.images_per_cluster`` clusters) and the network trains one epoch on those
pseudo-labels against per-camera cluster memories (the centroid contrastive loss of Eq. 7,
which is ClusterContrast's loss within one camera; batches hold one camera's clusters). After
the last epoch the final model's features are clustered once more: those local clusters stand
where the ICS per-camera labels stood, and CCAFL's stages 1-3 run on them unchanged.

``clusters.models: shared`` (the default) trains one trunk for all cameras; ``per_camera``
trains CALR's one model per camera instead: the same loop, run once per camera on that
camera's images alone, each from the pretrained weights. Either way each camera is clustered,
scored and batched on its own, so no loss ever compares two cameras; the shared trunk sees
every camera's images, the per-camera models see only their own (docs/unsupervised.md
compares the two).

Reads only ``path``, ``camera`` and ``camera_name`` of the training table: neither the
dataset's per-camera labels nor the cross-camera person id.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccafl import distributed
from ccafl.association.clusters import cluster_within_cameras
from ccafl.data.ics import global_ids
from ccafl.errors import UserError
from ccafl.io import write_json, write_parquet
from ccafl.memory import IntraCameraMemories
from ccafl.seeding import seed_everything
from ccafl.settings import Settings
from ccafl.training.common import LossLog
from ccafl.training.intra import camera_memory_update, initial_features, per_camera_losses
from ccafl.training.loop import BatchLosses, epoch_loader, train_epoch, train_features
from ccafl.training.schedule import ActiveLosses
from ccafl.training.state import TrainingData, TrainingState

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["path", "camera", "camera_name"]
LOCAL_COLUMNS = ["path", "camera", "local_cluster"]
# Stage A's loss: L_intra1 (Eq. 7) alone, each image against its own camera's clusters.
LOCAL_LOSSES = ActiveLosses(
    intra1=True, intra2=False, i2tce=False, ipcl=False, gid=False, ical=False
)


def read_images(train_table: str | Path) -> pd.DataFrame:
    """The unsupervised mode's view of the training table: images and cameras, no label."""
    return pd.read_parquet(train_table, columns=IMAGE_COLUMNS)


def check_cameras(images: pd.DataFrame, images_per_cluster: int, source: str = "") -> None:
    """One-line errors for what stage A cannot learn from: one camera, or a camera too small
    for one cluster of the size rule."""
    counts = images.groupby("camera_name").size()
    where = f" in {source}" if source else ""
    if len(counts) < 2:
        raise UserError(
            f"the unsupervised mode (train.camera_labels: clusters) needs training images from "
            f"at least 2 cameras; found {len(counts)}{where}"
        )
    small = counts[counts < images_per_cluster]
    if len(small):
        name, n = small.index[0], int(small.iloc[0])
        raise UserError(
            f"camera {name!r} has {n} training image(s){where}, fewer than one cluster of "
            f"clusters.images_per_cluster={images_per_cluster}: lower the key or drop the camera"
        )


def local_gids(cameras: np.ndarray, local: np.ndarray) -> np.ndarray:
    """One id per (camera, local cluster), ordered by camera then cluster, contiguous: the ICS
    gid rule (:func:`ccafl.data.ics.global_ids`) on the local clusters."""
    return global_ids(cameras, local)


def cluster_epoch(
    state: TrainingState,
    data: TrainingData,
    memories: IntraCameraMemories,
    local: np.ndarray,
    epoch: int,
    loss_log: LossLog,
) -> None:
    """One epoch on this epoch's local clusters: L_intra1 (Eq. 7) within each camera."""
    train = state.settings.train
    device = state.device
    cameras = torch.as_tensor(np.array(data.cameras))  # a writable copy
    targets_all = torch.as_tensor(local)

    def batch_losses(f: torch.Tensor, p: torch.Tensor, index: torch.Tensor) -> BatchLosses:
        batch_cameras = cameras[index].to(device)
        targets = targets_all[index].to(device)
        terms = per_camera_losses(
            f, p, batch_cameras, targets, None, memories, data, train, LOCAL_LOSSES
        )
        loss = terms["loss_intra1"]
        update = camera_memory_update(memories, batch_cameras, targets, index, train.momentum)
        return BatchLosses(loss, {"loss_local": loss}, None, update)

    def make_loader():
        return epoch_loader(
            state, data, local_gids(data.cameras, local), epoch, groups=data.cameras
        )

    train_epoch(state, epoch, "local", make_loader, batch_losses, loss_log)


def cluster_counts(cameras: np.ndarray, local: np.ndarray) -> dict:
    sizes = pd.Series(1, index=pd.MultiIndex.from_arrays([cameras, local])).groupby(level=[0, 1])
    sizes = sizes.sum()
    return {
        "clusters": int(len(sizes)),
        "singletons": int((sizes == 1).sum()),
        "clusters_per_camera": {int(c): int(n) for c, n in sizes.groupby(level=0).size().items()},
    }


def run_local_clusters(
    settings: Settings,
    images: pd.DataFrame,
    clip_path: str | Path | None,
    out_dir: str | Path,
    source: str = "",
) -> dict:
    """Stage A: ``clusters.epochs`` epochs of cluster-then-train, then the final clusters,
    with one shared model or one model per camera (``clusters.models``).

    ``source``: where ``images`` came from, for the one-line input errors."""
    clusters = settings.clusters
    check_cameras(images, clusters.images_per_cluster, source)
    # Stage A's own schedule: no warm-up, cosine over its own epochs.
    settings = settings.replace(
        train=settings.train.replace(epochs=max(1, clusters.epochs), warmup_epochs=0)
    )
    start = time.perf_counter()
    cameras = images["camera"].to_numpy()
    if clusters.models == "per_camera":
        local = np.zeros(len(images), dtype=np.int64)
        history, frames = [], []
        for camera in np.unique(cameras):
            rows = np.flatnonzero(cameras == camera)
            subset = images.iloc[rows].reset_index(drop=True)
            local[rows], camera_history, loss_log = _cluster_then_train(settings, subset, clip_path)
            history += [{"camera": int(camera), **row} for row in camera_history]
            frames.append(loss_log.frame().assign(camera=int(camera)))
        loss_frame = pd.concat(frames, ignore_index=True)
    else:
        local, history, loss_log = _cluster_then_train(settings, images, clip_path)
        loss_frame = loss_log.frame()
    metrics = {
        "epochs": clusters.epochs,
        "models": clusters.models,
        "seconds": time.perf_counter() - start,
        "final": cluster_counts(cameras, local),
        "history": history,
    }
    out_dir = Path(out_dir)
    if distributed.is_main():
        write_parquet(local_table(images, local), out_dir / "local_clusters.parquet")
        write_parquet(train_table(images, local), out_dir / "train.parquet")
        write_parquet(loss_frame, out_dir / "log.parquet")
        write_json(metrics, out_dir / "metrics.json")
    return metrics


def _cluster_then_train(
    settings: Settings, images: pd.DataFrame, clip_path: str | Path | None
) -> tuple[np.ndarray, list[dict], LossLog]:
    """(final local clusters, per-epoch history, loss log) of one model trained on ``images``
    (all cameras, or one camera's), from the pretrained weights at the run's seed."""
    clusters = settings.clusters
    seed_everything(settings.train.seed)
    data = TrainingData(Path(settings.dataset.root), images, torch.zeros(0), 1.0)
    state = TrainingState.create(settings, clip_path, n_gids=1)
    if settings.train.image_cache:
        data.cache_images(settings.input.size)
    cameras = np.array(data.cameras)  # a writable copy (torch shares it)

    def cluster(features: torch.Tensor) -> np.ndarray:
        return cluster_within_cameras(
            features.numpy(),
            cameras,
            images_per_cluster=clusters.images_per_cluster,
            k1=clusters.k1,
            k2=clusters.k2,
        )

    features = initial_features(state, data)
    loss_log = LossLog()
    history = []
    for epoch in range(1, clusters.epochs + 1):
        tick = time.perf_counter()
        local = cluster(features)
        memories = IntraCameraMemories.from_features(
            features, torch.as_tensor(cameras), torch.as_tensor(local)
        ).to(state.device)
        cluster_epoch(state, data, memories, local, epoch, loss_log)
        state.epoch = epoch
        features = train_features(state, data, f"epoch {epoch} features")
        history.append({"epoch": epoch, "seconds": time.perf_counter() - tick,
                        **cluster_counts(cameras, local)})  # fmt: skip
        log.info("epoch %d (local): %s", epoch, history[-1])
    return cluster(features), history, loss_log


def local_table(images: pd.DataFrame, local: np.ndarray) -> pd.DataFrame:
    """``local_clusters.parquet``: each training image's camera and its cluster in that camera."""
    return pd.DataFrame(
        {
            "path": images["path"].to_numpy(),
            "camera": images["camera"].to_numpy().astype(np.int64),
            "local_cluster": local.astype(np.int64),
        }
    )


def train_table(images: pd.DataFrame, local: np.ndarray) -> pd.DataFrame:
    """The training table stages 1-3 read, with the local clusters as the per-camera labels."""
    table = images[IMAGE_COLUMNS].copy()
    table["camera"] = table["camera"].astype(np.int64)
    table["intra_id"] = local.astype(np.int64)
    table["gid"] = local_gids(table["camera"].to_numpy(), table["intra_id"].to_numpy())
    return table
