"""CLIP-FGDI's domain classifier: text feature (B, D) -> source-domain logits (B, n_domains).

Shape as the official code has it (clip-fgdi-spec.md section 0): Linear D->128, BN, ReLU,
Linear 128->n_domains. Fed the identity prompts' text features through the gradient reversal
layer in stage 1, it makes those prompts domain-invariant.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DomainClassifier"]


class DomainClassifier(nn.Module):
    def __init__(self, in_dim: int, n_domains: int, hidden: int = 128):
        super().__init__()
        if n_domains < 2:
            raise ValueError(f"a domain classifier needs at least 2 domains, got {n_domains}")
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, n_domains),
        )

    def forward(self, text_feats: Tensor) -> Tensor:
        return self.layers(text_feats)
