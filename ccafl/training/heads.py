"""Heads that stage 3 trains beside the backbone with their own optimizer.

Such a head (CALR's camera classifier, CLIP-ReID's person classifier) takes its own Adam step
after the engine's backbone step, on the gradients the backbone step's backward left, so its
learning rate and moments are its own and the backbone's optimizer and schedule are unchanged.
It travels in every stage-3 checkpoint, so a resumed epoch equals an uninterrupted one. Under
torchrun each rank steps its head on its own slice of the batch (not synchronised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SteppedHead:
    head: nn.Module
    optimizer: torch.optim.Optimizer

    @staticmethod
    def adam(
        head: nn.Module, lr: float, weight_decay: float, saved: dict | None
    ) -> torch.optim.Optimizer:
        """The head's Adam; head and optimizer restored from ``saved`` (a `state_dict`)."""
        optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        if saved is not None:
            head.load_state_dict(saved["head"])
            optimizer.load_state_dict(saved["optimizer"])
        return optimizer

    def begin(self) -> None:
        """Before a batch's loss: clear the head's old gradients, training mode."""
        self.optimizer.zero_grad(set_to_none=True)
        self.head.train()

    def step(self) -> None:
        """The head's own descent step, on the gradients the backbone step's backward left."""
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}
