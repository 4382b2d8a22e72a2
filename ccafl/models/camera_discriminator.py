"""The camera classifier of CALR's camera-alignment module (Li et al., arXiv 2403.16450).

Fed the embedding through :func:`ccafl.losses.reverse_gradient`, it learns to name an image's
camera while the encoder learns to make that impossible. Shape as CALR's official code has it:
two 100-unit hidden layers with batch norm, ReLU and (after the first) dropout 0.5.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CameraDiscriminator"]


class CameraDiscriminator(nn.Module):
    """Embedding (B, D) -> camera logits (B, n_cameras)."""

    def __init__(self, in_dim: int, n_cameras: int, hidden: int = 100, dropout: float = 0.5):
        super().__init__()
        if n_cameras < 2:
            raise ValueError(f"camera alignment needs at least 2 cameras, got {n_cameras}")
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, n_cameras),
        )

    def forward(self, embedding: Tensor) -> Tensor:
        return self.layers(embedding)
