"""What a stage prints, and where: its log file gets everything, the terminal what matters.

A rule runs ``python -m ccafl <stage> ... --log <file>``: the process then writes all its output
(log records, progress bars, library messages) into the file, and only warnings of ccafl itself
and the final one-line error go to the terminal of the Snakemake run as well. Library lines
that mislead are kept out: open_clip's "Model initialized randomly" when weights are loaded on
top right after, and faiss' loader trying CPU builds that the wheel does not have.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OPEN_CLIP_DIR = None


def redirect_output(log_file: Path) -> TextIO:
    """Send this process's stdout and stderr (file descriptors 1 and 2) into ``log_file``.

    Returns a stream on the original stderr (the terminal). Under torchrun only rank 0
    truncates the file; the other ranks append to it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    first = os.environ.get("RANK", "0") == "0"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if first else 0)
    fd = os.open(log_file, flags, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return terminal


class _CcaflOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "ccafl" or record.name.startswith("ccafl.")


def setup_logging(command: str, verbose: bool, terminal: TextIO | None) -> None:
    """Root logging into stderr (the log file under --log); ccafl's warnings also to terminal."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, datefmt="%H:%M:%S"
    )
    # faiss logs each CPU build it tries, with a ModuleNotFoundError for the missing ones.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if terminal is not None and os.environ.get("RANK", "0") == "0":
        handler = logging.StreamHandler(terminal)
        handler.setLevel(logging.WARNING)
        handler.addFilter(_CcaflOnly())
        handler.setFormatter(logging.Formatter(f"ccafl {command}: %(levelname)s: %(message)s"))
        logging.getLogger().addHandler(handler)


class _DropOpenClipChatter(logging.Filter):
    """open_clip logs through the root logger; below ERROR its lines say nothing we do not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(_open_clip_dir())


def _open_clip_dir() -> str:
    global _OPEN_CLIP_DIR
    if _OPEN_CLIP_DIR is None:
        import open_clip

        _OPEN_CLIP_DIR = os.path.dirname(open_clip.__file__)  # as in LogRecord.pathname
    return _OPEN_CLIP_DIR


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's info and warnings while a model is built (debug logging keeps them).

    Its "No pretrained weights loaded ... Model initialized randomly" is wrong whenever weights
    are loaded into the model right after; the caller logs what was really loaded instead.
    """
    root = logging.getLogger()
    if root.isEnabledFor(logging.DEBUG):
        yield
        return
    chatter = _DropOpenClipChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)
