"""The epoch engine stages 2 and 3 share: loader, batches, autocast, step, logging, features.

A stage contributes only its loss terms and its memory update (`BatchLosses`); `train_epoch`
runs the same loop for both, feeding them PK batches of augmented images, and
`train_features` computes the un-augmented features that fill memories and drive the
association. Images come
either from the in-memory cache (``train.image_cache``, `ccafl.data.images.decode_images`) or
from DataLoader workers decoding files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ccafl import distributed
from ccafl.data.images import ImageTable
from ccafl.data.samplers import PKBatchSampler
from ccafl.data.transforms import normalize_uint8, tensor_train_transform, train_transform
from ccafl.inference.features import extract_features, features_of_batches
from ccafl.settings import TrainSection
from ccafl.training.common import LossLog
from ccafl.training.state import TrainingData, TrainingState


def iterations_per_epoch(train: TrainSection, n_images: int) -> int:
    return train.iters_per_epoch or max(1, n_images // (train.P * train.K))


def epoch_sampler(
    state: TrainingState,
    data: TrainingData,
    labels: np.ndarray,
    epoch: int,
    groups: np.ndarray | None = None,
) -> PKBatchSampler:
    """P labels x K images per batch; with ``groups`` all labels of a batch share a group."""
    train = state.settings.train
    return PKBatchSampler(
        labels,
        train.P,
        train.K,
        iterations_per_epoch(train, len(data.train)),
        groups=groups,
        seed=train.seed,
        epoch=epoch,
    )


def epoch_loader(
    state: TrainingState,
    data: TrainingData,
    labels: np.ndarray,
    epoch: int,
    groups: np.ndarray | None = None,
):
    """Iterable of ``(augmented images, dataset indices)``, this rank's slice of each batch."""
    sampler = distributed.RankSliceSampler(epoch_sampler(state, data, labels, epoch, groups))
    size = state.settings.input.size
    if data.images is not None:
        return CachedBatches(data.images, sampler, tensor_train_transform(*size))
    return DataLoader(
        ImageTable(data.root, data.train["path"].tolist(), train_transform(*size)),
        batch_sampler=sampler,
        num_workers=state.settings.train.num_workers,
        pin_memory=state.device.type == "cuda",
    )


class CachedBatches:
    """Batches cut from the decoded-image cache and augmented as tensors."""

    def __init__(self, images: torch.Tensor, batch_sampler, augment) -> None:
        self.images = images
        self.batch_sampler = batch_sampler
        self.augment = augment

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batch_sampler:
            index = torch.as_tensor(batch, dtype=torch.long)
            yield self.augment(self.images[index]), index


def epoch_batches(loader, epoch: int, stage: str):
    """``(step, (images, index))`` of one epoch, with a progress bar on rank 0 only."""
    bar = tqdm(
        loader, desc=f"epoch {epoch} ({stage})", leave=False, disable=not distributed.is_main()
    )
    return enumerate(bar)


def train_features(state: TrainingState, data: TrainingData, desc: str, which: str = "f"):
    """Un-augmented features of every training image, in train.parquet order.

    ``which``: ``f`` (the ReID feature), ``p`` (the CLIP projection) or ``raw`` (the tower's
    two outputs before the BN-necks, as a pair).
    """
    # A training-section size, so evaluation settings never trigger retraining.
    batch_size = 2 * state.settings.train.P * state.settings.train.K
    if data.images is not None:
        return cached_features(state.model, data.images, batch_size, state.device, which, desc)
    return extract_features(
        state.model,
        data.root,
        data.train["path"].tolist(),
        state.settings.input.size,
        batch_size=batch_size,
        num_workers=state.settings.train.num_workers,
        device=state.device,
        which=which,
        desc=desc,
    )


def cached_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    which: str = "f",
    desc: str = "features",
):
    """`extract_features` over the decoded-image cache (each rank a share, then gathered)."""
    mine = list(range(len(images)))[distributed.rank() :: distributed.world_size()]
    chunks = torch.as_tensor(mine, dtype=torch.long).split(batch_size)
    batches = (normalize_uint8(images[chunk]) for chunk in chunks)
    return features_of_batches(model, batches, mine, device, which, desc)


def log_step(
    loss_log: LossLog, epoch: int, step: int, lr: float, loss: torch.Tensor, terms: dict
) -> None:
    """Loss terms averaged over ranks (each rank's loss is the mean over its slice)."""
    values = {k: distributed.mean_across_ranks(float(v.detach())) for k, v in terms.items()}
    loss_log.add(
        epoch, step, lr, loss=distributed.mean_across_ranks(float(loss.detach())), **values
    )


@dataclass
class BatchLosses:
    """What a stage makes of one batch: the loss the backbone step minimises, the terms to
    log, the batch's gids (for L_GID; None in a stage without gids, which then has no
    classifier step) and its memory update, applied after both steps."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    gids: torch.Tensor | None
    update_memory: Callable[[torch.Tensor], None]


def train_epoch(
    state: TrainingState,
    epoch: int,
    stage: str,
    make_loader: Callable[[], object],
    batch_losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], BatchLosses],
    loss_log: LossLog,
) -> None:
    """One epoch of a training stage: per batch, the forward pass (under autocast on CUDA), the
    stage's losses, one backbone step, one classifier step (L_GID, Eq. 17, on detached
    features; skipped when the stage gives no gids), the stage's memory update and one log row.

    ``make_loader`` is called after the epoch's learning rate is set; ``batch_losses(f, p,
    index)`` gets the batch's ReID feature f, its CLIP projection p (both float32) and the
    dataset indices of its images.
    """
    lr = state.start_epoch(epoch)
    loader = make_loader()
    for step, (images, index) in epoch_batches(loader, epoch, stage):
        with state.autocast():
            f, p = state.model(images.to(state.device, non_blocking=True))
        f, p = f.float(), p.float()
        batch = batch_losses(f, p, index)
        state.backbone_step(batch.loss)
        if batch.gids is not None:
            batch.terms["loss_gid"] = state.classifier_step(f, batch.gids)
        batch.update_memory(f)
        log_step(loss_log, epoch, step, lr, batch.loss, batch.terms)
