"""CALR's camera alignment in stage 3 (``train.labels: refined``, ``clusters.alignment_epochs``).

A camera classifier (:class:`ccafl.models.camera_discriminator.CameraDiscriminator`) reads the
normalised embedding through a gradient reversal layer: its own weights learn to name the
camera (their own Adam step, after the engine's backbone step), the encoder receives the
reversed gradient and learns features the classifier cannot place. CALR's code runs it in the
first 3 stage-B epochs with alpha 1. The classifier and its optimizer travel in every stage-3
checkpoint, so a resumed epoch equals an uninterrupted one. Under torchrun each rank steps its
classifier on its own slice of the batch (not synchronised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ccafl.losses import camera_adversarial_loss, reverse_gradient
from ccafl.models.camera_discriminator import CameraDiscriminator

CHECKPOINT_KEY = "camera_alignment"


@dataclass
class CameraAlignment:
    head: CameraDiscriminator
    optimizer: torch.optim.Optimizer
    form: str

    @classmethod
    def create(cls, feat_dim: int, n_cameras: int, lr: float, weight_decay: float, form: str,
               device: torch.device, saved: dict | None = None) -> CameraAlignment:  # fmt: skip
        head = CameraDiscriminator(feat_dim, n_cameras).to(device)
        optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        if saved is not None:
            head.load_state_dict(saved["head"])
            optimizer.load_state_dict(saved["optimizer"])
        return cls(head, optimizer, form)

    def loss(self, f: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """The camera loss of a batch, through the GRL; clears the head's old gradients first."""
        self.optimizer.zero_grad(set_to_none=True)
        self.head.train()
        logits = self.head(reverse_gradient(F.normalize(f, dim=1)))
        return camera_adversarial_loss(logits, cameras, form=self.form)

    def step(self) -> None:
        """The head's own descent step, on the gradients the backbone step's backward left."""
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}
