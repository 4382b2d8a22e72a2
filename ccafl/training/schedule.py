"""Every schedule of training in one place: which loss terms are active in an epoch (paper
Eq. 20 plus the ablation switches) and the learning rate of each stage (stages 2-3 per epoch,
stage 1 and the caption pretraining per step)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ccafl.settings import TrainSection


@dataclass(frozen=True)
class ActiveLosses:
    intra1: bool  # L_intra1, Eq. 7 (always in stage 2: part of the baseline)
    intra2: bool  # L_intra2, Eq. 8 (ICDL)
    i2tce: bool  # L_i2tce, Eq. 9 in stage 2, Eq. 15 in stage 3
    ipcl: bool  # L_IPCL, Eq. 14 (always in stage 3: part of the baseline)
    gid: bool  # L_GID, Eq. 17 (every epoch; trains the classifier only)
    ical: bool  # L_ICAL, Eq. 18

    @property
    def stage(self) -> str:
        return "intra" if self.intra1 else "inter"


def active_losses(epoch: int, train: TrainSection) -> ActiveLosses:
    """Eq. 20: epochs <= E_intra: L_intra + L_GID; later L_inter + L_GID; from E_adv + L_ICAL.

    ``epoch`` is 1-based; ``train`` is the typed ``train`` section (`ccafl.settings`).
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    switches = train.losses
    intra = epoch <= train.intra_epochs
    return ActiveLosses(
        intra1=intra,
        intra2=intra and switches.intra2,
        i2tce=switches.i2tce,
        ipcl=not intra,
        gid=True,
        ical=(not intra) and switches.ical and epoch >= train.adv_start,
    )


def lr_factor(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Linear warm-up from 0.1x over ``warmup_epochs`` (paper: 10), then cosine to 0.01x.

    ``epoch`` is 1-based. The paper states the warm-up only; the cosine tail is our choice
    (the one CLIP-ReID uses) and is documented in docs/configuration.md.
    """
    if warmup_epochs > 0 and epoch <= warmup_epochs:
        return 0.1 + 0.9 * (epoch - 1) / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs - 1) / span)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def prompt_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stage 1 (prompt learning): cosine from the base rate towards 0 over all steps."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def pretrain_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Caption pretraining of the tiny CLIP, per step (0-based): linear warm-up over
    ``warmup_steps``, then a half cosine over the whole run."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1 + math.cos(math.pi * step / total_steps))
