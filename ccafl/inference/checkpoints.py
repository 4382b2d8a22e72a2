"""Reading checkpoints and final model files, with one line naming the file and the fix.

Checkpoints carry a small ``header`` (format name and version, epoch, config digest), so that a
file that is not one of ours, is of a newer format, or holds another epoch is refused with one
line. Writing them is training's job (`ccafl.training.common.save_checkpoint`: it also keeps
every RNG state).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ccafl.checks import checkpoint_problem, recovery_hint
from ccafl.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ccafl-checkpoint"
# 1: the header was added; files without one (written before) read as version 0.
CHECKPOINT_VERSION = 1


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
