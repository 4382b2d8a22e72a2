"""Atomic artifact writes: a job killed mid-write never leaves a file that looks finished.

The temporary file is a sibling ``.<name>.<pid>.<random>.tmp``, created with the usual mode
(0666 less the umask, like every other file of the run). It is removed when the write fails
or the process is stopped by a signal that Python sees (the CLI turns SIGTERM into an exit);
after a SIGKILL, the next write of the same artifact removes the leftovers.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

# Temporary files older than this process cannot be its own, nor of any live writer of the
# same artifact (Snakemake runs one job per output).
_STARTED = time.time()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(path: Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` siblings of ``path`` left by writers that died; return them."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 : -len(".tmp")].split(".")
        pid = int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else None
        try:
            older = tmp.stat().st_mtime < _STARTED
        except FileNotFoundError:
            continue
        if not older or (pid is not None and pid != os.getpid() and _pid_alive(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask (tempfile.mkstemp would make the artifact 0600).
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    return _write_with(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json(obj: Any, path: str | Path) -> Path:
    def writer(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")

    return _write_with(path, writer)


def write_text(text: str, path: str | Path) -> Path:
    return _write_with(path, lambda tmp: tmp.write_text(text))


def save_torch(obj: Any, path: str | Path) -> Path:
    import torch

    return _write_with(path, lambda tmp: torch.save(obj, tmp))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
