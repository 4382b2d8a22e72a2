"""Seeding Python's, numpy's and torch's global generators: training, and the untrained
reference network (which must be the same random network for every retrieval feature)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
