"""Stage 2 (paper Eq. 4-11, 17): intra-camera discriminative learning, epochs 1..E_intra.

Each batch comes from one camera (P identities x K images), is scored against that camera's
centroid and instance memories (L_ICDL) and that camera's text features (L_i2tce_intra), and
trains the global-ID classifier on detached features (L_GID).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ccafl import distributed
from ccafl.data.images import ImageTable
from ccafl.data.samplers import PKBatchSampler
from ccafl.data.transforms import train_transform
from ccafl.io import write_json
from ccafl.losses import (
    centroid_contrastive_loss,
    hard_instance_loss,
    icdl_loss,
    image_text_cross_entropy,
)
from ccafl.memory import IntraCameraMemories, class_mean_features
from ccafl.models.factory import input_size
from ccafl.training.common import LossLog, extract_features, seed_everything
from ccafl.training.schedule import active_losses
from ccafl.training.state import TrainingData, TrainingState

log = logging.getLogger(__name__)


def iterations_per_epoch(config: dict, n_images: int) -> int:
    train = config["train"]
    return train["iters_per_epoch"] or max(1, n_images // (train["P"] * train["K"]))


def train_features(state: TrainingState, data: TrainingData, desc: str) -> torch.Tensor:
    """Un-augmented f(x) of every training image, in train.parquet order."""
    return extract_features(
        state.model,
        data.root,
        data.train["path"].tolist(),
        input_size(state.config),
        # A training-section size, so evaluation settings never trigger retraining.
        batch_size=2 * state.config["train"]["P"] * state.config["train"]["K"],
        num_workers=state.config["train"]["num_workers"],
        device=state.device,
        desc=desc,
    )


def epoch_loader(
    state: TrainingState, data: TrainingData, labels, epoch: int, groups=None
) -> DataLoader:
    train = state.config["train"]
    sampler = PKBatchSampler(
        labels,
        train["P"],
        train["K"],
        iterations_per_epoch(state.config, len(data.train)),
        groups=groups,
        seed=train["seed"],
        epoch=epoch,
    )
    dataset = ImageTable(
        data.root, data.train["path"].tolist(), train_transform(*input_size(state.config))
    )
    return DataLoader(
        dataset,
        batch_sampler=distributed.RankSliceSampler(sampler),
        num_workers=train["num_workers"],
        pin_memory=state.device.type == "cuda",
    )


def epoch_batches(loader: DataLoader, epoch: int, stage: str):
    """``(step, (images, index))`` of one epoch, with a progress bar on rank 0 only."""
    bar = tqdm(
        loader, desc=f"epoch {epoch} ({stage})", leave=False, disable=not distributed.is_main()
    )
    return enumerate(bar)


def intra_epoch(
    state: TrainingState,
    data: TrainingData,
    memories: IntraCameraMemories,
    epoch: int,
    loss_log: LossLog,
) -> None:
    train = state.config["train"]
    active = active_losses(epoch, train)
    lr = state.start_epoch(epoch)
    device = state.device
    cameras = torch.as_tensor(data.cameras)
    intra_ids = torch.as_tensor(data.train["intra_id"].to_numpy())
    gids = torch.as_tensor(data.gids)
    text = data.text_features.to(device)
    loader = epoch_loader(state, data, data.gids, epoch, groups=data.cameras)
    for step, (images, index) in epoch_batches(loader, epoch, "intra"):
        camera = int(cameras[index[0]])
        targets = intra_ids[index].to(device)
        with state.autocast():
            f, p = state.model(images.to(device, non_blocking=True))
        f, p = f.float(), p.float()
        terms = {}
        l_intra1 = centroid_contrastive_loss(
            f, memories.centroid_memory(camera), targets, train["temperature"]
        )
        terms["loss_intra1"] = l_intra1
        if active.intra2:
            bank, bank_labels = memories.instance_memory(camera)
            l_intra2 = hard_instance_loss(f, bank, bank_labels, targets, train["temperature"])
            terms["loss_intra2"] = l_intra2
            loss = icdl_loss(l_intra1, l_intra2, train["lam"])
        else:
            loss = l_intra1
        if active.i2tce:
            # Candidates are the gids of the batch's own camera (Eq. 9): a contiguous range.
            camera_gids = torch.unique(gids[cameras == camera]).to(device)
            offset = int(camera_gids[0])
            l_text = image_text_cross_entropy(
                p,
                text[camera_gids],
                gids[index].to(device) - offset,
                data.logit_scale,
                train["label_smoothing"],
            )
            terms["loss_i2tce"] = l_text
            loss = loss + l_text
        state.backbone_step(loss)
        terms["loss_gid"] = state.classifier_step(f, gids[index].to(device))
        # Under torchrun every rank applies the whole global batch, so memories stay identical.
        gather = distributed.all_gather_cat
        memories.update(
            gather(F.normalize(f.detach(), dim=1)),
            gather(cameras[index].to(device)),
            gather(targets),
            gather(index.to(device)),
            train["momentum"],
        )
        log_step(loss_log, epoch, step, lr, loss, terms)


def log_step(
    loss_log: LossLog, epoch: int, step: int, lr: float, loss: torch.Tensor, terms: dict
) -> None:
    """Loss terms averaged over ranks (each rank's loss is the mean over its slice)."""
    values = {k: distributed.mean_across_ranks(float(v.detach())) for k, v in terms.items()}
    loss_log.add(
        epoch, step, lr, loss=distributed.mean_across_ranks(float(loss.detach())), **values
    )


def run_intra(
    config: dict, data: TrainingData, clip_path: str | Path | None, out_dir: str | Path
) -> dict:
    seed_everything(config["train"]["seed"])
    state = TrainingState.create(config, clip_path, data.n_gids)
    start = time.perf_counter()
    features = train_features(state, data, "initial features")
    cameras = torch.as_tensor(data.cameras)
    intra_ids = torch.as_tensor(data.train["intra_id"].to_numpy())
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids).to(state.device)
    # Warm start of the classifier from the gid centroids (ClusterContrast-style init).
    state.classifier.init_from_centroids(
        class_mean_features(features, torch.as_tensor(data.gids), data.n_gids).to(state.device)
    )
    loss_log = LossLog()
    epoch_seconds = []
    for epoch in range(1, config["train"]["intra_epochs"] + 1):
        tick = time.perf_counter()
        intra_epoch(state, data, memories, epoch, loss_log)
        state.epoch = epoch
        epoch_seconds.append(time.perf_counter() - tick)
        log.info("epoch %d (intra): %s", epoch, _fmt(loss_log.epoch_means(epoch)))
    out_dir = Path(out_dir)
    state.save(out_dir / "checkpoint.pt", memories=memories.state_dict())
    loss_log.write(out_dir / "log.parquet")
    metrics = {
        "epochs": config["train"]["intra_epochs"],
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "seconds": time.perf_counter() - start,
        "iterations_per_epoch": iterations_per_epoch(config, len(data.train)),
    }
    if distributed.is_main():
        write_json(metrics, out_dir / "metrics.json")
    return metrics


def _fmt(terms: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
