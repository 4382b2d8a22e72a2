"""CALR's camera alignment in stage 3 (``train.labels: refined``, ``clusters.alignment_epochs``).

A camera classifier (:class:`ccafl.models.camera_discriminator.CameraDiscriminator`) reads the
normalised embedding through a gradient reversal layer: its own weights learn to name the
camera (their own Adam step, after the engine's backbone step:
:class:`ccafl.training.heads.SteppedHead`), the encoder receives the reversed gradient and
learns features the classifier cannot place. CALR's code runs it in the first 3 stage-B epochs
with alpha 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ccafl.losses import camera_adversarial_loss, reverse_gradient
from ccafl.models.camera_discriminator import CameraDiscriminator
from ccafl.training.heads import SteppedHead

CHECKPOINT_KEY = "camera_alignment"


@dataclass
class CameraAlignment(SteppedHead):
    form: str

    @classmethod
    def create(cls, feat_dim: int, n_cameras: int, lr: float, weight_decay: float, form: str,
               device: torch.device, saved: dict | None = None) -> CameraAlignment:  # fmt: skip
        # A job that rebuilds the head to restore it must leave the training's random state
        # as the checkpoint restored it (its draws would shift every later augmentation).
        with torch.random.fork_rng(devices=[], enabled=saved is not None):
            head = CameraDiscriminator(feat_dim, n_cameras).to(device)
        return cls(head, cls.adam(head, lr, weight_decay, saved), form)

    def loss(self, f: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """The camera loss of a batch, through the GRL; clears the head's old gradients first."""
        self.begin()
        logits = self.head(reverse_gradient(F.normalize(f, dim=1)))
        return camera_adversarial_loss(logits, cameras, form=self.form)
