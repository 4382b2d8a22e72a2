"""The domain-generalisation mode's data: several source datasets pooled into one training
table, and held-out target datasets that only evaluation reads.

Pooling follows CLIP-FGDI's official code (``../shared/reference/clip-fgdi-spec.md`` section 1):
the sources' training splits are concatenated, identities are namespaced per source (disjoint
identity spaces) and every image carries its source's *domain label*, the index of the source
among the sorted source names. Cameras are namespaced too (``<domain>/c1``): camera 1 of one
dataset is not camera 1 of another. The pooled tables have the ICS contract of
`ccafl.data.ics` (plus a ``domain`` column in the training table), so every stage reads them
as it reads one dataset's.

A target is written as query and gallery tables only: no table of a target's training images
exists, so no training stage can read a target domain (the structural leakage rule of the mode).
Paths in every table are relative to ``dataset.root``, as for one dataset.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ccafl.data.datasets import DatasetError, RawDataset, load_dataset
from ccafl.data.ics import EVAL_COLUMNS, _camera_order, check_evaluable, relabel, verify_images
from ccafl.io import write_json, write_parquet

log = logging.getLogger(__name__)

# pid of a pooled person = (domain label + 1) * PID_STRIDE + the source's own pid, so the
# sources' identity spaces stay disjoint and 0 (distractor) and -1 (junk) keep their meaning.
PID_STRIDE = 1_000_000
DOMAIN_SEPARATOR = "/"


@dataclass(frozen=True)
class Domain:
    """One dataset of a DG run: its name, where and in which format it lies, its label."""

    name: str
    format: str
    root: Path
    layout: str = "auto"
    label: int = -1  # index among the sorted source names; -1 for a target


def domains_from_config(config: dict) -> dict[str, Domain]:
    """Every domain of ``dg.domains``, labelled: sources by their sorted names (as CLIP-FGDI's
    code does), targets -1. A synthetic domain lies at ``<dataset.root>/<name>``."""
    dg = config["dg"]  # a stage may see only some keys of it (the rules pass what it reads)
    sources = sorted(dg.get("sources", []))
    out = {}
    for name, entry in dg.get("domains", {}).items():
        fmt = entry.get("format", "synthetic")
        if fmt == "synthetic":
            root = Path(config["dataset"]["root"]) / name
        else:
            root = Path(entry["root"]).expanduser()
        label = sources.index(name) if name in sources else -1
        out[name] = Domain(name, fmt, root, entry.get("layout", "auto"), label)
    return out


def synthetic_spec_config(config: dict, name: str) -> dict:
    """The synthetic section a synthetic domain is rendered from: the top-level ``synthetic``
    with the domain's own ``synthetic`` overrides."""
    return {**config["synthetic"], **config["dg"]["domains"][name].get("synthetic", {})}


def _relative(paths: pd.Series, root: Path, base: Path) -> pd.Series:
    """Paths of ``root`` rewritten relative to ``base`` (the tables' dataset.root)."""
    prefix = os.path.relpath(root.resolve(), base.resolve())
    return paths.map(lambda p: Path(prefix, p).as_posix())


def _namespaced(raw: RawDataset, domain: Domain, base: Path) -> RawDataset:
    offset = (domain.label + 1) * PID_STRIDE

    def move(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out["path"] = _relative(out["path"], raw.root, base)
        out["camera_name"] = domain.name + DOMAIN_SEPARATOR + out["camera_name"].astype(str)
        if "pid" in out:
            out["pid"] = np.where(out["pid"] > 0, out["pid"] + offset, out["pid"]).astype("int64")
        if "intra_label" in out:  # per-camera labels stay per camera, cameras are namespaced
            out["intra_label"] = out["intra_label"].astype("int64")
        out["domain"] = domain.label
        return out

    return RawDataset(
        raw.root, move(raw.train), move(raw.query), move(raw.gallery), raw.has_train_pid
    )


def pool_sources(
    sources: list[Domain], base: str | Path, out_dir: str | Path, verify: str = "header"
) -> dict:
    """Write the pooled ICS tables of ``sources`` (train with ``domain``, train_truth, and the
    sources' own query and gallery for in-domain evaluation) into ``out_dir``."""
    start = time.perf_counter()
    base = Path(base)
    parts = []
    for domain in sorted(sources, key=lambda d: d.label):
        raw = load_dataset(domain.root, domain.format, domain.layout)
        check_evaluable_or_name(raw, domain)
        verify_images(raw.root, _all_paths(raw), verify)
        parts.append(_namespaced(raw, domain, base))
    pooled = RawDataset(
        base,
        pd.concat([p.train for p in parts], ignore_index=True),
        pd.concat([p.query for p in parts], ignore_index=True),
        pd.concat([p.gallery for p in parts], ignore_index=True),
        all(p.has_train_pid for p in parts),
    )
    tables = relabel(pooled)
    domain_of_path = pooled.train.set_index("path")["domain"]
    train = tables.train.copy()
    train["domain"] = train["path"].map(domain_of_path).astype("int64")
    out_dir = Path(out_dir)
    write_parquet(train, out_dir / "train.parquet")
    write_parquet(tables.train_truth, out_dir / "train_truth.parquet")
    write_parquet(tables.query, out_dir / "query.parquet")
    write_parquet(tables.gallery, out_dir / "gallery.parquet")
    summary = tables.summary
    summary["domains"] = {
        d.name: {
            "label": d.label,
            "root": str(d.root),
            "format": d.format,
            "train_images": int((train["domain"] == d.label).sum()),
        }
        for d in sources
    }
    summary["seconds"] = round(time.perf_counter() - start, 3)
    write_json(summary, out_dir / "summary.json")
    return summary


def target_tables(
    target: Domain, base: str | Path, out_dir: str | Path, verify: str = "header"
) -> dict:
    """Write a target's query and gallery tables (paths relative to ``base``); its training
    split is never written anywhere."""
    start = time.perf_counter()
    raw = load_dataset(target.root, target.format, target.layout)
    index = _camera_index(raw)
    check_evaluable_or_name(raw, target, index)
    verify_images(raw.root, [*raw.query["path"], *raw.gallery["path"]], verify)
    out_dir = Path(out_dir)
    summary = {"target": target.name, "root": str(target.root), "format": target.format}
    for split, df in (("query", raw.query), ("gallery", raw.gallery)):
        table = df.copy()
        table["path"] = _relative(table["path"], raw.root, Path(base))
        table["camera"] = table["camera_name"].map(index).astype("int64")
        table["pid"] = table["pid"].astype("int64")
        write_parquet(table[EVAL_COLUMNS].reset_index(drop=True), out_dir / f"{split}.parquet")
        summary[split] = {
            "images": len(table),
            "ids": int(table.loc[table.pid > 0, "pid"].nunique()),
        }
    summary["n_cameras"] = len(index)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    write_json(summary, out_dir / "summary.json")
    return summary


def _camera_index(raw: RawDataset) -> dict[str, int]:
    """A dataset's test cameras in the order the ICS tables give them (`_camera_order`)."""
    names = pd.concat([raw.query["camera_name"], raw.gallery["camera_name"]])
    return {name: i for i, name in enumerate(_camera_order(names))}


def check_evaluable_or_name(
    raw: RawDataset, domain: Domain, index: dict[str, int] | None = None
) -> None:
    """`check_evaluable` on one domain's own cameras, its error naming the domain's key."""
    index = index or _camera_index(raw)
    try:
        check_evaluable(
            raw.query.assign(camera=raw.query.camera_name.map(index)),
            raw.gallery.assign(camera=raw.gallery.camera_name.map(index)),
            raw.root,
        )
    except DatasetError as error:
        raise DatasetError(f"dg.domains.{domain.name}: {error}") from None


def _all_paths(raw: RawDataset) -> list[str]:
    return [*raw.train["path"], *raw.query["path"], *raw.gallery["path"]]
