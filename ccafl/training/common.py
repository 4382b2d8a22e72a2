"""What every training stage shares: seeding and RNG state, mixed precision, writing
checkpoints, the loss log.

Checkpoints carry every RNG state, so an epoch recomputed after an interruption equals the
epoch computed in one go (on CPU; CUDA kernels may be nondeterministic). Reading them (and
their header) is `ccafl.inference.checkpoints`; learning rates are `ccafl.training.schedule`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ccafl import distributed
from ccafl.inference.checkpoints import checkpoint_header
from ccafl.io import save_torch, write_parquet

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: CPU autocast is slower than fp32 for these models."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_checkpoint(path: str | Path, **parts: Any) -> None:
    """Collective under torchrun (every rank's RNG state is kept); rank 0 writes."""
    states = distributed.all_gather_objects(rng_state())
    if distributed.is_main():
        header = checkpoint_header(parts.get("epoch"), parts.get("config"))
        save_torch(
            {
                **parts,
                "header": header,
                "rng": states[0],
                "rng_per_rank": states,
                "saved_at": time.time(),
            },
            path,
        )


class LossLog:
    """Rows of ``epoch, step, <loss terms>, lr`` written to log.parquet."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(self, epoch: int, step: int, lr: float, **terms: float) -> None:
        self.rows.append({"epoch": epoch, "step": step, **terms, "lr": lr})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def write(self, path: str | Path) -> None:
        if distributed.is_main():
            write_parquet(self.frame(), path)

    def epoch_means(self, epoch: int) -> dict[str, float]:
        frame = self.frame()
        rows = frame[frame["epoch"] == epoch].drop(columns=["epoch", "step"])
        return rows.mean(numeric_only=True).to_dict()


@contextlib.contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    store[key] = store.get(key, 0.0) + time.perf_counter() - start
