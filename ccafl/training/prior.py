"""CLIP-FGDI's prior stage (``fgdi.prior_epochs``, DG mode): the image encoder adapted to the
sources' persons before any prompt is learnt.

Why: CLIP-FGDI learns its prompts on the features of an image encoder already fine-tuned with
its person ID loss and batch-hard triplet (3 epochs), not on the raw pretrained CLIP's
features as CLIP-ReID does; the prompts then describe features that already separate persons.
Here that stage runs on the epoch engine (`ccafl.training.loop.train_epoch`) with the stage-3
heads and losses of ``fgdi.id_loss`` and ``fgdi.triplet``, on P x K batches of the true person
labels, and writes a CLIP checkpoint: the input CLIP's text tower with the adapted image
tower. Stages 1 and 2 of the run start from it as they would from the pretrained CLIP.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ccafl import distributed
from ccafl.io import save_torch, write_json
from ccafl.models.backbone import uses_quick_gelu
from ccafl.models.factory import build_clip
from ccafl.seeding import seed_everything
from ccafl.settings import Settings
from ccafl.training.common import LossLog
from ccafl.training.intra import initial_features
from ccafl.training.loop import BatchLosses, epoch_loader, iterations_per_epoch, train_epoch
from ccafl.training.person_id import PersonClassifier, person_terms
from ccafl.training.state import TrainingData, TrainingState

log = logging.getLogger(__name__)


def prior_batch_losses(person: PersonClassifier | None, triplet: float, image_labels: torch.Tensor):
    """A prior batch's loss: ``fgdi.id_loss`` x L_id + ``fgdi.triplet`` x L_tri on f; no gid
    classifier step and no memory, the person head stepped after the backbone."""

    def batch_losses(f: torch.Tensor, p: torch.Tensor, index: torch.Tensor) -> BatchLosses:
        terms = person_terms(f, image_labels[index].to(f.device), person, triplet)

        def step_head(f: torch.Tensor) -> None:
            if person is not None:
                person.step()

        return BatchLosses(sum(terms.values()), terms, None, step_head)

    return batch_losses


def run_prior(
    settings: Settings,
    data: TrainingData,
    gid_labels: np.ndarray,
    clip_path: str | Path | None,
    out_dir: str | Path,
) -> dict:
    """``fgdi.prior_epochs`` epochs of L_id + L_tri on the person labels of each gid
    (``gid_labels``); writes ``clip.pt`` (a CLIP checkpoint stages 1 and 2 read), the loss
    log and metrics. The learning rate of prior epoch e is the run's epoch e's (its warm-up,
    as CLIP-FGDI's prior runs in its schedule's warm-up)."""
    fgdi, train = settings.fgdi, settings.train
    seed_everything(train.seed)
    start = time.perf_counter()
    state = TrainingState.create(settings, clip_path, data.n_gids)
    if train.image_cache:
        data.cache_images(settings.input.size)
    initial_features(state, data)  # the BN-necks calibrated, as stage 2 starts
    image_labels = torch.as_tensor(gid_labels[data.gids])
    n_labels = int(gid_labels.max()) + 1
    person = None
    if fgdi.id_loss > 0:
        person = PersonClassifier.create(
            state.module.feat_dim, n_labels, train.lr, train.weight_decay, fgdi.id_loss,
            train.label_smoothing, state.device, seed=train.seed,
        )  # fmt: skip
    batch_losses = prior_batch_losses(person, fgdi.triplet, image_labels)
    loss_log = LossLog()
    for epoch in range(1, fgdi.prior_epochs + 1):

        def make_loader(epoch: int = epoch):
            return epoch_loader(state, data, image_labels.numpy(), epoch)

        train_epoch(state, epoch, "prior", make_loader, batch_losses, loss_log)
        means = loss_log.epoch_means(epoch)
        log.info("epoch %d (prior): %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in means.items()))
    out_dir = Path(out_dir)
    metrics = {
        "epochs": fgdi.prior_epochs,
        "n_labels": n_labels,
        "iterations_per_epoch": iterations_per_epoch(train, len(data.train)),
        **loss_log.epoch_means(fgdi.prior_epochs),
        "seconds": time.perf_counter() - start,
    }
    if distributed.is_main():
        save_torch(adapted_clip(settings, clip_path, state.module.visual), out_dir / "clip.pt")
        loss_log.write(out_dir / "log.parquet")
        write_json(metrics, out_dir / "metrics.json")
    return metrics


def adapted_clip(settings: Settings, clip_path: str | Path | None, visual: torch.nn.Module):
    """The input CLIP with ``visual``'s weights in its image tower, as a CLIP checkpoint.

    Saved at the ReID input geometry, which `ccafl.models.backbone.create_clip` loads without
    re-gridding; the BN-necks and the person head stay behind (stage 2 calibrates its own).
    """
    clip = build_clip(settings.clip, settings.input.size, clip_path)
    clip.visual.load_state_dict(visual.state_dict())
    return {
        "model": clip.state_dict(),
        "quick_gelu": uses_quick_gelu(clip),
        "clip_model": settings.clip.model,
        "source": f"prior stage ({settings.fgdi.prior_epochs} epochs) on {clip_path}",
    }
