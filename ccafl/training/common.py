"""What every training stage shares: device, seeding, schedules, feature extraction, checkpoints.

Checkpoints carry every RNG state, so an epoch recomputed after an interruption equals the
epoch computed in one go (on CPU; CUDA kernels may be nondeterministic). They also carry a
small ``header`` (format name and version, epoch, config digest), so that a file that is not
one of ours, is of a newer format, or holds another epoch is refused with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ccafl import distributed
from ccafl.checks import checkpoint_problem, recovery_hint
from ccafl.data.images import ImageTable
from ccafl.data.transforms import test_transform
from ccafl.errors import CheckpointError
from ccafl.io import save_torch, write_parquet

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ccafl-checkpoint"
# 1: the header was added; files without one (written before) read as version 0.
CHECKPOINT_VERSION = 1


def pick_device() -> torch.device:
    """This process's device: its own GPU under torchrun, else cuda:0 or the CPU."""
    return distributed.local_device()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def lr_factor(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Linear warm-up from 0.1x over ``warmup_epochs`` (paper: 10), then cosine to 0.01x.

    ``epoch`` is 1-based. The paper states the warm-up only; the cosine tail is our choice
    (the one CLIP-ReID uses) and is documented in config/README.md.
    """
    if warmup_epochs > 0 and epoch <= warmup_epochs:
        return 0.1 + 0.9 * (epoch - 1) / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs - 1) / span)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: CPU autocast is slower than fp32 for these models."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loader(dataset: ImageTable, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


@torch.no_grad()
def extract_features(
    model: nn.Module,
    root: str | Path,
    paths: list[str],
    input_size: tuple[int, int],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | None = None,
    which: str = "f",
    desc: str = "features",
):
    """Un-augmented features of ``paths`` in order.

    ``which``: ``f`` (the ReID feature behind its BN-neck(s)), ``p`` (the CLIP projection) or
    ``raw`` (the pair (pooled, projection) before any BN-neck). Under torchrun each rank
    computes every world_size-th image and the shards are gathered, so every rank returns all
    features.
    """
    device = device or pick_device()
    mine = list(range(len(paths)))[distributed.rank() :: distributed.world_size()]
    dataset = ImageTable(root, [paths[i] for i in mine], test_transform(*input_size))
    loader = make_loader(dataset, batch_size, num_workers)
    batches = (images for images, _ in loader)
    return features_of_batches(model, batches, mine, device, which, desc)


@torch.no_grad()
def features_of_batches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    mine: list[int],
    device: torch.device,
    which: str = "f",
    desc: str = "features",
):
    """Features (see `extract_features`) of this rank's share ``mine`` of the images, given as
    normalised batches in order; the shards of all ranks are gathered in image order."""
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    was_training = model.training
    model.eval()
    outputs = []
    for images in tqdm(batches, desc=desc, leave=False, disable=not distributed.is_main()):
        pooled, proj = model.pooled(images.to(device, non_blocking=True))
        if which == "raw":
            outputs.append((pooled.float(), proj.float()))
        elif which == "f":
            outputs.append((model.head(pooled, proj).float(),))
        else:
            outputs.append((proj.float(),))
    model.train(was_training)
    if outputs:
        parts = [torch.cat(column) for column in zip(*outputs, strict=True)]
    else:
        parts = [torch.empty(0, device=device)] * (2 if which == "raw" else 1)
    if distributed.world_size() > 1:
        order = distributed.all_gather_cat(torch.tensor(mine, device=device))
        gathered = []
        for part in parts:
            full = distributed.all_gather_cat(part)
            out = torch.empty_like(full)
            out[order] = full
            gathered.append(out)
        parts = gathered
    parts = [part.cpu() for part in parts]
    return tuple(parts) if which == "raw" else parts[0]


def config_digest(config: dict) -> str:
    """A short fingerprint of a config, to tell whether a checkpoint was trained with it."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_header(epoch: int | None, config: dict | None) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "config_digest": config_digest(config) if config is not None else None,
    }


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


def load_checkpoint(
    path: str | Path,
    *,
    epoch: int | None = None,
    config: dict | None = None,
    mmap: bool = False,
) -> dict[str, Any]:
    """Read a checkpoint (or a final model file); CheckpointError naming it and the fix.

    ``epoch``: the epoch it must hold. ``config``: the current config, only to log which keys
    differ from the one it was trained with. ``mmap``: map the tensors instead of reading them
    (a cheap look at the header before a full load).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (written by an earlier stage: run snakemake, or "
            "correct the path)"
        )
    problem = checkpoint_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} is {problem}; {recovery_hint(path)}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:  # torch raises many types for a damaged archive
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({first}); {recovery_hint(path)}"
        ) from error
    missing = [
        k for k in ("model", "config") if not isinstance(checkpoint, dict) or k not in checkpoint
    ]
    if missing:
        raise CheckpointError(
            f"{path} is not a ccafl checkpoint (it lacks {', '.join(missing)}); pass the "
            "checkpoint.pt or model.pt that the pipeline wrote"
        )
    header = checkpoint.get("header") or {}
    if header and header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a ccafl checkpoint (its header says {header.get('format')!r}); "
            "pass the checkpoint.pt or model.pt that the pipeline wrote"
        )
    version = int(header.get("version", 0))
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, this ccafl reads up to "
            f"{CHECKPOINT_VERSION}: update ccafl, or {recovery_hint(path)}"
        )
    if epoch is not None and int(checkpoint.get("epoch", -1)) != epoch:
        raise CheckpointError(
            f"checkpoint {path} holds epoch {checkpoint.get('epoch')}, not epoch {epoch} as "
            f"this stage needs; pass the checkpoint of epoch {epoch}, or {recovery_hint(path)}"
        )
    if config is not None and header.get("config_digest") not in (None, config_digest(config)):
        changed = _changed_keys(checkpoint["config"], config)
        log.info("%s was trained with another config (differs in %s)", path, ", ".join(changed))
    log.debug("checkpoint %s: epoch %s (format version %d)", path, checkpoint.get("epoch"), version)
    return checkpoint


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


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
