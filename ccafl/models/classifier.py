"""Global-ID cosine classifier of CCAFL (paper Eq. 17, used by ICAL Eq. 18)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosineClassifier"]


class CosineClassifier(nn.Module):
    """Cosine classifier over the N_G global ICS IDs (paper Eq. 17).

    ``logits[i, g] = normalise(f(x_i)) . normalise(phi_g) / temperature``.

    Args:
        n_classes: N_G, the number of global ICS IDs.
        dim: feature dimension D of f(x).
        temperature: tau of Eq. 17. The paper gives no value for Eq. 17; the default 0.05 is
            the tau the paper uses for its other cosine softmaxes (Eq. 7, 8 and 13/14, section
            IV-B), so all cosine logits of the method share one scale.

    Two uses, one per optimisation step of section III-E:

    * L_GID (Eq. 17) trains the classifier only: call it on *detached* features,
      ``classifier(feats.detach())``, and step the classifier's own optimiser.
    * L_ICAL (Eq. 18) trains the backbone only: call ``classifier(feats, frozen_weights=True)``;
      the weights are used detached, so the gradient reaches the features and never phi.
    """

    def __init__(self, n_classes: int, dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.normal_(self.weight, std=0.001)

    @torch.no_grad()
    def init_from_centroids(self, centroids: Tensor) -> None:
        """Set phi_g to the (N_G, D) gid centroids: a warm start that makes the first L_GID
        steps meaningful instead of starting from random directions (optional)."""
        self.weight.copy_(F.normalize(centroids.to(self.weight), dim=1))

    def forward(self, feats: Tensor, frozen_weights: bool = False) -> Tensor:
        """(B, D) features -> (B, N_G) logits; ``frozen_weights`` detaches the weights."""
        weight = self.weight.detach() if frozen_weights else self.weight
        return F.normalize(feats, dim=1) @ F.normalize(weight, dim=1).t() / self.temperature

    def extra_repr(self) -> str:
        n_classes, dim = self.weight.shape
        return f"n_classes={n_classes}, dim={dim}, temperature={self.temperature}"
