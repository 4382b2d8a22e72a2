"""The training state shared by stages 2 and 3, and its checkpoint round trip.

The global-ID classifier (Eq. 17) has its own optimizer and sees detached features, so L_GID
never moves the backbone; ICAL (Eq. 18) uses the classifier with frozen weights, so it moves
only the backbone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ccafl import distributed
from ccafl.data.images import decode_images
from ccafl.inference.checkpoints import load_checkpoint
from ccafl.inference.features import pick_device
from ccafl.models.backbone import uses_quick_gelu
from ccafl.models.classifier import CosineClassifier
from ccafl.models.factory import build_reid_model, checkpoint_quick_gelu
from ccafl.settings import Settings
from ccafl.training.common import autocast, save_checkpoint, set_rng_state
from ccafl.training.schedule import lr_factor, set_lr

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What training may read: the ICS table (no person id) and the stage-1 text features."""

    root: Path
    train: pd.DataFrame
    # (N_G, D) t_g, row = gid, L2-normalised; None without texts (stage A, an image-only
    # backbone), where no loss that reads them may run.
    text_features: torch.Tensor | None
    logit_scale: float | None
    images: torch.Tensor | None = None  # decoded training images (train.image_cache)
    # The DG mode with fgdi.domain_prompts: t- of each gid (N_G, D), L2-normalised.
    domain_text: torch.Tensor | None = None

    def with_domain_text(self, path: str | Path) -> TrainingData:
        table = pd.read_parquet(path).sort_values("gid")
        if len(table) != self.n_gids:
            raise ValueError(
                f"{path}: {len(table)} domain-relevant text features for {self.n_gids} gids; "
                "rerun the prompt rule with fgdi.domain_prompts: true"
            )
        features = torch.tensor(np.stack(table["feature"].to_numpy()), dtype=torch.float32)
        self.domain_text = nn.functional.normalize(features, dim=1)
        return self

    @property
    def n_gids(self) -> int:
        return int(self.train["gid"].max()) + 1

    @property
    def gids(self) -> np.ndarray:
        return self.train["gid"].to_numpy()

    @property
    def cameras(self) -> np.ndarray:
        return self.train["camera"].to_numpy()

    @cached_property
    def gids_of_camera(self) -> dict[int, torch.Tensor]:
        """Sorted gids of each camera (a contiguous range: gids are numbered camera by camera)."""
        gids, cameras = torch.as_tensor(self.gids), torch.as_tensor(self.cameras)
        return {int(c): torch.unique(gids[cameras == c]) for c in torch.unique(cameras)}

    def cache_images(self, size: tuple[int, int], threads: int = 4) -> TrainingData:
        """Decode every training image once (uint8, at the network input size)."""
        if self.images is None:
            self.images = decode_images(self.root, self.train["path"].tolist(), size, threads)
        return self

    @classmethod
    def load(
        cls, dataset_root: str | Path, ics_dir: str | Path, prompt_dir: str | Path | None
    ) -> TrainingData:
        """The training table and, unless ``prompt_dir`` is None (an image-only backbone: no
        prompts), stage 1's text features and logit scale."""
        train = pd.read_parquet(Path(ics_dir) / "train.parquet")
        if "pid" in train.columns:  # the ICS rule, checked where training reads its input
            raise ValueError("the training table must not carry the cross-camera person id")
        if prompt_dir is None:
            return cls(Path(dataset_root), train, None, None)
        text = pd.read_parquet(Path(prompt_dir) / "text_features.parquet").sort_values("gid")
        features = torch.tensor(np.stack(text["feature"].to_numpy()), dtype=torch.float32)
        meta = torch.load(Path(prompt_dir) / "prompt_tokens.pt", map_location="cpu")
        return cls(
            Path(dataset_root),
            train,
            nn.functional.normalize(features, dim=1),
            float(meta["logit_scale"]),
        )


@dataclass
class TrainingState:
    settings: Settings
    model: nn.Module
    classifier: CosineClassifier
    optimizer: torch.optim.Optimizer
    classifier_optimizer: torch.optim.Optimizer
    device: torch.device
    epoch: int = 0  # last finished epoch
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        settings: Settings,
        clip_path: str | Path | None,
        n_gids: int,
        *,
        weights: bool = True,
        quick_gelu: bool | None = None,
    ) -> TrainingState:
        """A fresh state; ``weights=False`` builds the bare architecture (see `resume`)."""
        device = pick_device()
        train = settings.train
        model = build_reid_model(settings, clip_path, weights=weights, quick_gelu=quick_gelu)
        model = model.to(device)
        if distributed.world_size() > 1:
            # Unused parameters: the projection head when L_i2tce is switched off.
            model = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        feat_dim = getattr(model, "module", model).feat_dim
        classifier = CosineClassifier(n_gids, feat_dim, train.classifier_temperature)
        classifier.to(device)
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad],
            lr=train.lr,
            weight_decay=train.weight_decay,
        )
        classifier_optimizer = torch.optim.Adam(classifier.parameters(), lr=train.classifier_lr)
        return cls(settings, model, classifier, optimizer, classifier_optimizer, device)

    @property
    def module(self) -> nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    def start_epoch(self, epoch: int) -> float:
        train = self.settings.train
        factor = lr_factor(epoch, train.warmup_epochs, train.epochs)
        set_lr(self.optimizer, train.lr * factor)
        set_lr(self.classifier_optimizer, train.classifier_lr * factor)
        self.model.train()
        self.classifier.train()
        return train.lr * factor

    def autocast(self):
        return autocast(self.device, self.settings.train.amp)

    def backbone_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def classifier_step(self, feats: torch.Tensor, gids: torch.Tensor) -> torch.Tensor:
        """L_GID (Eq. 17) on detached features: trains the classifier only.

        Under torchrun the features of all ranks are gathered, so every rank takes the same
        step and the classifiers stay identical without DDP.
        """
        from ccafl.losses import gid_classifier_loss

        feats = distributed.all_gather_cat(feats.detach())
        gids = distributed.all_gather_cat(gids)
        loss = gid_classifier_loss(self.classifier(feats.detach().float()), gids)
        self.classifier_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.classifier_optimizer.step()
        return loss.detach()

    def save(self, path: str | Path, **extra: Any) -> None:
        save_checkpoint(
            path,
            epoch=self.epoch,
            model=self.module.state_dict(),
            classifier=self.classifier.state_dict(),
            optimizer=self.optimizer.state_dict(),
            classifier_optimizer=self.classifier_optimizer.state_dict(),
            config=self.settings.raw,
            quick_gelu=uses_quick_gelu(self.module),
            **extra,
        )

    @classmethod
    def resume(
        cls, path: str | Path, settings: Settings, clip_path: str | Path | None, n_gids: int
    ) -> TrainingState:
        """Rebuild from a checkpoint, RNG states included.

        The architecture is built bare and only the checkpoint is loaded: the pretrained CLIP
        weights were read once, when stage 2 started, so ``clip_path`` is not read (the
        original weight file may be gone, or on a hub this node cannot reach). The activation
        is the one the checkpoint recorded.
        """
        checkpoint = load_checkpoint(path, config=settings.raw)
        state = cls.create(
            settings,
            None,
            n_gids,
            weights=False,
            quick_gelu=checkpoint_quick_gelu(checkpoint),
        )
        state.module.load_state_dict(checkpoint["model"])
        state.classifier.load_state_dict(checkpoint["classifier"])
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        state.classifier_optimizer.load_state_dict(checkpoint["classifier_optimizer"])
        state.epoch = int(checkpoint["epoch"])
        state.extra = {k: v for k, v in checkpoint.items() if k not in _CORE_KEYS}
        per_rank = checkpoint.get("rng_per_rank", [checkpoint["rng"]])
        if len(per_rank) == distributed.world_size():
            set_rng_state(per_rank[distributed.rank()])
        else:  # resumed with another number of processes: the run is no longer bit-exact
            set_rng_state(checkpoint["rng"])
        log.info(
            "resumed from %s: model, classifier, optimizers and RNG states of epoch %d",
            path,
            state.epoch,
        )
        return state


_CORE_KEYS = {
    "epoch",
    "quick_gelu",
    "model",
    "classifier",
    "optimizer",
    "classifier_optimizer",
    "config",
    "rng",
    "rng_per_rank",
    "saved_at",
    "header",
}
