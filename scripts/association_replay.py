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
control that tells a per-camera effect from a global one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ccafl.association import associate, association_quality, center_per_camera
from ccafl.association.diagnostics import truth_per_gid
from ccafl.inference.checkpoints import load_checkpoint
from ccafl.memory import class_mean_features
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


def replay(run: Path, name: str, thresholds: list[float]) -> list[dict]:
    results = next((run / "results").iterdir())
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in replay(run, run.name, args.thresholds)]
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
