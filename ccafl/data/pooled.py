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
from ccafl.data.dg_datasets import SPLIT_LOADERS, TEST_SPLIT, TRAIN_ONLY, n_splits
from ccafl.data.ics import EVAL_COLUMNS, _camera_order, check_evaluable, relabel, verify_images
from ccafl.data.raw import RAW_COLUMNS
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
    combine_all: bool = False  # as a source, train on all its images; a target ignores it
    split: int | str | None = None  # a small dataset's protocol split; "all"/None: every one


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
        out[name] = Domain(
            name,
            fmt,
            root,
            entry.get("layout", "auto"),
            label,
            bool(entry.get("combine_all", False)),
            entry.get("split"),
        )
    return out


def _source_split(domain: Domain) -> int | None:
    """The split a split-based source trains on: its integer split; with combine_all any
    (split 0: every split holds all images); others have none."""
    if domain.format not in SPLIT_LOADERS:
        return None
    if isinstance(domain.split, int):
        return domain.split
    if domain.combine_all:
        return 0
    raise DatasetError(
        f"dg.domains.{domain.name}.split: a {domain.format} source trains on one protocol "
        "split; set split to 0-9, or combine_all: true to train on all its images"
    )


def _combined(raw: RawDataset) -> RawDataset:
    """CLIP-FGDI's combine_all: every labelled image of a source trains (its identities are
    disjoint across its splits), and it keeps no test split of its own."""
    parts = [raw.train, raw.query, raw.gallery]
    everything = pd.concat([p[RAW_COLUMNS] for p in parts], ignore_index=True)
    everything = everything[everything["pid"] > 0].drop_duplicates("path").copy()
    everything["intra_label"] = everything["pid"]
    empty = raw.query.iloc[0:0]
    return RawDataset(raw.root, everything.reset_index(drop=True), empty, empty.copy(), True)


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
        raw = load_dataset(domain.root, domain.format, domain.layout, _source_split(domain))
        if domain.combine_all:
            raw = _combined(raw)
        if len(raw.query):  # CUHK-SYSU and combined sources have no test split
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
    tables = relabel(pooled, require_test=False)
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
    raw = _target_splits(target)
    index = _camera_index(raw)
    check_evaluable_or_name(raw, target, index)
    verify_images(raw.root, sorted({*raw.query["path"], *raw.gallery["path"]}), verify)
    out_dir = Path(out_dir)
    summary = {"target": target.name, "root": str(target.root), "format": target.format}
    columns = [*EVAL_COLUMNS, *([TEST_SPLIT] if TEST_SPLIT in raw.query else [])]
    for split, df in (("query", raw.query), ("gallery", raw.gallery)):
        table = df.copy()
        table["path"] = _relative(table["path"], raw.root, Path(base))
        table["camera"] = table["camera_name"].map(index).astype("int64")
        table["pid"] = table["pid"].astype("int64")
        write_parquet(table[columns].reset_index(drop=True), out_dir / f"{split}.parquet")
        summary[split] = {
            "images": len(table),
            "ids": int(table.loc[table.pid > 0, "pid"].nunique()),
        }
    if TEST_SPLIT in raw.query:
        summary["test_splits"] = sorted(int(k) for k in raw.query[TEST_SPLIT].unique())
    summary["n_cameras"] = len(index)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    write_json(summary, out_dir / "summary.json")
    return summary


def _target_splits(target: Domain) -> RawDataset:
    """A target's query and gallery. A small dataset's (PRID, GRID, VIPeR, iLIDS) carry the
    protocol split of each row in ``test_split``: one split, or every one (``split`` all/null),
    which evaluation scores one by one and averages, as the standard protocol does."""
    if target.format in TRAIN_ONLY:
        raise DatasetError(
            f"dg.domains.{target.name}: a {target.format} dataset has no query and gallery "
            "(training only); use it as a source"
        )
    if target.format not in SPLIT_LOADERS:
        return load_dataset(target.root, target.format, target.layout, target.split)
    if isinstance(target.split, int):
        splits = [target.split]
    else:
        splits = list(range(n_splits(target.root, target.format)))
    loaded = [load_dataset(target.root, target.format, split=k) for k in splits]
    query, gallery = (
        pd.concat(
            [
                getattr(raw, part).assign(**{TEST_SPLIT: k})
                for k, raw in zip(splits, loaded, strict=True)
            ],
            ignore_index=True,
        )
        for part in ("query", "gallery")
    )
    empty = loaded[0].train.iloc[0:0]
    return RawDataset(loaded[0].root, empty, query, gallery)


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
