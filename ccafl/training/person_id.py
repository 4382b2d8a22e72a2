"""CLIP-ReID's and CLIP-FGDI's person ID loss in stage 3 (``fgdi.id_loss``, DG mode).

A linear classifier without bias over the run's person labels reads f (the feature behind its
BN-neck(s), as CLIP-ReID's classifier reads its BN feature), trained by label-smoothed
cross-entropy; its weights start at N(0, 0.001^2) as CLIP-ReID initialises its classifier. Its
own Adam at ``train.lr`` steps it after the backbone's step
(:class:`ccafl.training.heads.SteppedHead`), so the backbone's optimizer and schedule are
those of every other run. The labels must stay the same across epochs, which only the true
ids do (``train.labels: supervised``): an association or a clustering renumbers them every
epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ccafl.losses import batch_hard_triplet_loss, person_id_loss
from ccafl.training.heads import SteppedHead

CHECKPOINT_KEY = "person_classifier"


@dataclass
class PersonClassifier(SteppedHead):
    weight: float  # fgdi.id_loss
    label_smoothing: float

    @classmethod
    def create(cls, feat_dim: int, n_labels: int, lr: float, weight_decay: float, weight: float,
               label_smoothing: float, device: torch.device, seed: int = 0,
               saved: dict | None = None) -> PersonClassifier:  # fmt: skip
        # Drawn from its own generator: the training's random state is the checkpoint's, so a
        # job that rebuilds the head to restore it must not consume from it.
        head = nn.Linear(feat_dim, n_labels, bias=False, device="meta").to_empty(device="cpu")
        generator = torch.Generator().manual_seed(seed)
        nn.init.normal_(head.weight, std=0.001, generator=generator)
        head = head.to(device)
        if saved is not None and saved["head"]["weight"].shape != head.weight.shape:
            raise ValueError(
                f"the checkpoint's person classifier has {saved['head']['weight'].shape[0]} "
                f"labels, this epoch has {n_labels}"
            )
        return cls(head, cls.adam(head, lr, weight_decay, saved), weight, label_smoothing)

    def loss(self, f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted ID loss of a batch; clears the head's old gradients first."""
        self.begin()
        return self.weight * person_id_loss(self.head(f), labels, self.label_smoothing)


def person_terms(
    f: torch.Tensor, labels: torch.Tensor, person: PersonClassifier | None, triplet: float
) -> dict[str, torch.Tensor]:
    """CLIP-ReID's image-encoder terms of a batch (stage 3 and the prior stage): ``fgdi.triplet``
    x the batch-hard triplet, and the head's weighted ID loss where there is a head."""
    terms = {}
    if triplet > 0:
        terms["loss_triplet"] = triplet * batch_hard_triplet_loss(f, labels)
    if person is not None:
        terms["loss_id"] = person.loss(f, labels)
    return terms
