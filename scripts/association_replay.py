"""Replay a finished run's stage-3 associations with other association rules, without training.

For every stage-3 epoch k of a run folder, the checkpoint of epoch k-1 gives the features the
association of epoch k saw; they are recomputed, and each rule below turns their gid centroids
into pseudo-labels, scored against the true person ids (the diagnostics' pairwise precision,
recall, F and expansion). The ``paper`` rule reproduces the run's own ``assoc_*`` figures, so
the other rows are the same features under another rule. It reads ``train_truth.parquet``:
a measuring tool, never part of training.

    python scripts/association_replay.py /tmp/ccafl-demo-spread/s0-t2-native --out replay.jsonl

Rules: ``paper`` (Eq. 12 on the raw centroids), ``camera-centred`` (Eq. 12 on
:func:`ccafl.association.center_per_camera`, what ``train.camera_centering: true`` runs) at
each ``--thresholds`` value, and ``global-centred`` (one mean over all cameras removed: the
control that tells a per-camera effect from a global one). ``--more`` adds the remedies of
issue 21 measured in docs/results.md, each on the raw and the camera-centred centroids:
``margin D`` (an Eq. 12 edge must also be at least D shorter than the second-nearest gid of
the other camera, from both ends: an ambiguity test), ``top2`` (mutual within each other's
two nearest, conflicts broken as usual), ``jaccard k1=K`` (Eq. 12's mutual-nearest test on
the k-reciprocal Jaccard distance of the gid centroids, k2 = 1, T still on the Euclidean one)
and ``mean of last W`` (the centroids of the last W replayed epochs averaged: a temporal
ensemble).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ccafl.association import associate, association_quality, center_per_camera
from ccafl.association.diagnostics import truth_per_gid
from ccafl.association.graph import _components
from ccafl.inference.checkpoints import load_checkpoint
from ccafl.memory import class_mean_features
from ccafl.reranking import jaccard_distance
from ccafl.settings import Settings
from ccafl.training.loop import train_features
from ccafl.training.state import TrainingData, TrainingState

KEYS = ("precision", "recall", "f_score", "expansion", "n_clusters")


def rules(centroids: np.ndarray, cameras: np.ndarray, threshold: float, thresholds) -> dict:
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    centred = center_per_camera(centroids, cameras)
    shifted = unit - unit.mean(axis=0)
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    labels = {"paper": associate(unit, cameras, threshold)[0]}
    for value in (threshold, *thresholds):
        labels[f"camera-centred T={value}"] = associate(centred, cameras, value)[0]
    labels["global-centred"] = associate(shifted, cameras, threshold)[0]
    return labels


def mutual_labels(
    distance: np.ndarray,
    euclidean: np.ndarray,
    cameras: np.ndarray,
    threshold: float,
    *,
    top: int = 1,
    margin: float = 0.0,
) -> tuple[np.ndarray, int]:
    """(labels, edges before conflict breaking) of Eq. 12 on a dense gid x gid ``distance``.

    An edge joins two gids of different cameras that are within each other's ``top`` nearest
    in the other's camera, with ``euclidean < threshold`` and, from both ends, ``distance +
    margin`` at most the distance to the second-nearest gid of that camera; camera conflicts
    are broken as the pipeline breaks them. ``top=1, margin=0`` on the Euclidean distance is
    exactly :func:`associate` (dense: for replayed runs' few thousand gids).
    """
    codes = np.unique(cameras, return_inverse=True)[1].ravel()
    n_gids, n_cameras = len(codes), int(codes.max()) + 1
    nearest = np.full((n_gids, n_cameras, top), -1, dtype=np.int64)
    second = np.full((n_gids, n_cameras), np.inf)
    for camera in range(n_cameras):
        members = np.flatnonzero(codes == camera)
        order = np.argsort(distance[:, members], axis=1, kind="stable")
        width = min(top, len(members))
        nearest[:, camera, :width] = members[order[:, :width]]
        if len(members) > 1:
            second[:, camera] = distance[np.arange(n_gids), members[order[:, 1]]]
        nearest[members, camera] = -1
        second[members, camera] = np.inf
    gid, camera, slot = np.nonzero(nearest >= 0)
    partner = nearest[gid, camera, slot]
    back = (nearest[partner, codes[gid]] == gid[:, None]).any(axis=1)
    keep = back & (gid < partner)
    src, dst = gid[keep], partner[keep]
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    near = distance[src, dst]
    accept = (euclidean[src, dst] < threshold) & (near + margin <= second[src, codes[dst]])
    accept &= near + margin <= second[dst, codes[src]]
    src, dst = src[accept], dst[accept]
    labels = _components(n_gids, codes, src, dst, euclidean[src, dst].astype(np.float32))[0]
    return labels, len(src)


def more_rules(centroids: np.ndarray, cameras: np.ndarray, threshold: float, history: list) -> dict:
    """The ``--more`` rules (module docstring); ``history`` holds earlier epochs' unit centroids."""
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    history.append(unit)
    labels = {}
    for name, vectors in (("", unit), ("camera-centred ", center_per_camera(unit, cameras))):
        vectors = vectors.astype(np.float64)
        euclidean = np.sqrt(np.clip(2 - 2 * vectors @ vectors.T, 0, None))
        for margin in (0.02, 0.04, 0.08):
            labels[f"{name}margin {margin}"] = mutual_labels(
                euclidean, euclidean, cameras, threshold, margin=margin
            )[0]
        labels[f"{name}top2"] = mutual_labels(euclidean, euclidean, cameras, threshold, top=2)[0]
        for k1 in (4, 8, 16):
            jaccard = jaccard_distance(vectors.astype(np.float32), k1=k1, k2=1)
            labels[f"{name}jaccard k1={k1}"] = mutual_labels(
                jaccard, euclidean, cameras, threshold
            )[0]
    for window in (2, 3):
        mean = np.mean(history[-window:], axis=0)
        labels[f"mean of last {window}"] = associate(mean, cameras, threshold)[0]
        labels[f"camera-centred mean of last {window}"] = associate(
            center_per_camera(mean, cameras), cameras, threshold
        )[0]
    return labels


def replay(run: Path, name: str, thresholds: list[float], more: bool = False) -> list[dict]:
    # The results folder of the ICS run: the one with stage-3 epochs (others may sit beside it).
    results = next(
        path for path in sorted((run / "results").iterdir()) if (path / "inter").is_dir()
    )
    history: list[np.ndarray] = []
    epochs = sorted(int(p.name.split("_")[1]) for p in (results / "inter").glob("epoch_*"))
    rows = []
    for epoch in epochs:
        previous = (
            results / "intra" / "checkpoint.pt"
            if epoch == epochs[0]
            else results / "inter" / f"epoch_{epoch - 1:03d}" / "checkpoint.pt"
        )
        settings = Settings.from_config(load_checkpoint(previous)["config"])
        root = Path(settings.dataset.root)
        data = TrainingData.load(root if root.is_absolute() else run / root, results / "ics",
                                 results / "prompt")  # fmt: skip
        state = TrainingState.resume(previous, settings, None, data.n_gids)
        features = train_features(state, data, f"epoch {epoch} features")
        centroids = class_mean_features(features, torch.as_tensor(data.gids), data.n_gids)
        cameras = np.zeros(data.n_gids, dtype=np.int64)
        cameras[data.gids] = data.cameras
        truth = truth_per_gid(data.train, results / "ics" / "train_truth.parquet")
        found = rules(centroids.numpy(), cameras, settings.train.threshold, thresholds)
        if more:
            found |= more_rules(centroids.numpy(), cameras, settings.train.threshold, history)
        for rule, labels in found.items():
            quality = association_quality(labels, truth)
            rows.append({"run": name, "epoch": epoch, "rule": rule,
                         **{key: quality[key] for key in KEYS}})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with results/<name>/)")
    parser.add_argument("--thresholds", nargs="*", type=float, default=[1.0, 0.9, 0.8, 0.7])
    parser.add_argument("--out", type=Path, help="write every row as JSON lines here")
    parser.add_argument("--more", action="store_true", help="also the remedies in the docstring")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in replay(run, run.name, args.thresholds, args.more)]
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"\n{'rule':24s} " + " ".join(f"{run.name:>22s}" for run in args.runs))
    for rule in dict.fromkeys(row["rule"] for row in rows):
        cells = []
        for run in args.runs:
            f = [r["f_score"] for r in rows if r["rule"] == rule and r["run"] == run.name]
            cells.append(f"F mean {np.mean(f):.3f} last {f[-1]:.3f}")
        print(f"{rule:24s} " + " ".join(f"{cell:>22s}" for cell in cells))


if __name__ == "__main__":
    main()
