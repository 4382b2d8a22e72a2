"""The evaluation stage: features of query and gallery, Market-1501 metrics, tables to report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ccafl.data.dg_datasets import TEST_SPLIT
from ccafl.evaluation import cmc_at, rank_metrics
from ccafl.inference.features import extract_features, pick_device
from ccafl.io import write_json, write_parquet
from ccafl.reranking import k_reciprocal_rerank
from ccafl.settings import Settings

log = logging.getLogger(__name__)


def _retrieval(
    query: pd.DataFrame,
    gallery: pd.DataFrame,
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    rerank: bool,
    distance: str = "cosine",
) -> dict:
    labels = dict(
        q_pids=query["pid"].to_numpy(),
        g_pids=gallery["pid"].to_numpy(),
        q_cams=query["camera"].to_numpy(),
        g_cams=gallery["camera"].to_numpy(),
    )
    if rerank:
        distmat = k_reciprocal_rerank(
            q_feats.numpy(), g_feats.numpy(), normalize=distance == "cosine"
        )
        return rank_metrics(distmat, **labels)
    return rank_metrics(
        query_features=q_feats, gallery_features=g_feats, distance=distance, **labels
    )


def _per_split(
    query: pd.DataFrame,
    gallery: pd.DataFrame,
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    rerank: bool,
    distance: str = "cosine",
) -> dict:
    """The standard protocol of PRID, GRID, VIPeR and iLIDS: each split's query against its
    own gallery, the metrics averaged over splits (each split's kept under ``splits``)."""
    results, splits = [], []
    for split in sorted(query[TEST_SPLIT].unique()):
        q = np.flatnonzero(query[TEST_SPLIT].to_numpy() == split)
        g = np.flatnonzero(gallery[TEST_SPLIT].to_numpy() == split)
        result = _retrieval(
            query.iloc[q],
            gallery.iloc[g],
            q_feats[torch.from_numpy(q)],
            g_feats[torch.from_numpy(g)],
            rerank,
            distance,
        )
        results.append(result)
        splits.append({"split": int(split), "mAP": result["mAP"], **cmc_at(result)})
    return {
        "mAP": float(np.mean([r["mAP"] for r in results])),
        "mINP": float(np.mean([r["mINP"] for r in results])),
        "cmc": np.mean([r["cmc"] for r in results], axis=0),
        "n_valid_queries": sum(r["n_valid_queries"] for r in results),
        "n_skipped_queries": sum(r["n_skipped_queries"] for r in results),
        "splits": splits,
    }


def evaluate_model(
    model: nn.Module,
    settings: Settings,
    dataset_root: str | Path,
    ics_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    label: str = "model",
    neck: str = "after",
    distance: str = "cosine",
) -> dict:
    """Market-1501 metrics of ``model`` on the ICS folder's query and gallery (written to
    ``out_dir`` with the CMC and the features when given). ``neck``/``distance``: which side of
    the BN-neck(s) the feature is taken and how it is compared (config ``eval.neck`` and
    ``eval.distance``, read by the evaluate stage; the reference rows keep the defaults)."""
    device = pick_device()
    model = model.to(device).eval()
    ics_dir = Path(ics_dir)
    query = pd.read_parquet(ics_dir / "query.parquet")
    gallery = pd.read_parquet(ics_dir / "gallery.parquet")

    def features(table: pd.DataFrame, split: str) -> torch.Tensor:
        return extract_features(
            model,
            dataset_root,
            table["path"].tolist(),
            settings.input.size,
            batch_size=settings.eval.batch_size,
            num_workers=settings.train.num_workers,
            device=device,
            which="f" if neck == "after" else "before_neck",
            desc=f"{split} features",
        )

    by_split = TEST_SPLIT in query.columns
    if by_split:  # a small DG target: an image recurs across splits, its feature is one
        index, paths = pd.factorize(pd.concat([query["path"], gallery["path"]]))
        unique = features(pd.DataFrame({"path": paths}), "query and gallery")
        q_feats, g_feats = unique[index[: len(query)]], unique[index[len(query) :]]
        result = _per_split(query, gallery, q_feats, g_feats, settings.eval.rerank, distance)
    else:
        q_feats, g_feats = features(query, "query"), features(gallery, "gallery")
        result = _retrieval(query, gallery, q_feats, g_feats, settings.eval.rerank, distance)
    metrics = {
        "mAP": float(result["mAP"]),
        "mINP": float(result["mINP"]),
        **cmc_at(result),
        "dataset": settings.dataset.name,
        "model": label,
        "rerank": bool(settings.eval.rerank),
        "neck": neck,
        "distance": distance,
        "n_query": int(len(query)),
        "n_gallery": int(len(gallery)),
        "n_valid_queries": int(result["n_valid_queries"]),
        "n_skipped_queries": int(result["n_skipped_queries"]),
        **({"splits": result["splits"]} if by_split else {}),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(metrics, out_dir / "metrics.json")
        cmc = np.asarray(result["cmc"], dtype=np.float64)
        write_parquet(
            pd.DataFrame({"rank": np.arange(1, len(cmc) + 1), "cmc": cmc}), out_dir / "cmc.parquet"
        )
        table = pd.concat(
            [query.assign(split="query"), gallery.assign(split="gallery")], ignore_index=True
        )
        all_feats = torch.cat([q_feats, g_feats]).numpy().astype(np.float32)
        write_parquet(
            table[["split", "path", "pid", "camera", *([TEST_SPLIT] if by_split else [])]].assign(
                feature=list(all_feats)
            ),
            out_dir / "features.parquet",
        )
    log.info(
        "%s: mAP %.1f%%, rank-1 %.1f%%, mINP %.1f%%",
        label,
        100 * metrics["mAP"],
        100 * metrics["rank1"],
        100 * metrics["mINP"],
    )
    return metrics
