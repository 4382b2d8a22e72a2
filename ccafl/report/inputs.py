"""The files a report is drawn from (as the report rule names them), read with a `NotAvailable`
naming what is missing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


class NotAvailable(Exception):
    """An optional input of a plot or table is missing; the message says which and why."""


def read_json(path: Path) -> dict:
    import json

    if not path.is_file():
        raise NotAvailable(f"{path} not found")
    return json.loads(path.read_text())


def read_parquet(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise NotAvailable(f"no {what} ({path} not found)")
    return pd.read_parquet(path)


@dataclass
class ReportInputs:
    """The files a report is drawn from, as the report rule names them; None: not in this run.

    ``training_logs``: log.parquet per stage, keyed "clip" (caption pretraining), "prompt"
    (stage 1), "intra" (stage 2). ``epochs``: epoch -> (log.parquet, metrics.json) of each
    inter-camera epoch. ``attribute_zero_shot``: clip/zero_shot.json of a caption-pretrained
    CLIP. ``references``: name -> reference JSON (`ccafl.reference`), shown beside the trained
    model. ``benchmarks``: job name -> Snakemake benchmark .tsv.
    """

    metrics: Path | None = None
    cmc: Path | None = None
    features: Path | None = None
    dataset_root: Path | None = None
    training_logs: dict[str, Path] = field(default_factory=dict)
    epochs: dict[int, tuple[Path, Path]] = field(default_factory=dict)
    attribute_zero_shot: Path | None = None
    references: dict[str, Path] = field(default_factory=dict)
    benchmarks: dict[str, Path] = field(default_factory=dict)


def given(path: Path | None, what: str) -> Path:
    if path is None:
        raise NotAvailable(f"no {what} in this run")
    return Path(path)
