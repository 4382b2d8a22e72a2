"""CALR's clusters on a finished run's features: does pivot refinement make them purer?

For chosen checkpoints of a run (default: the end of stage 2 and the last stage-3 epoch), the
training images' features are recomputed and clustered the way CALR's unsupervised mode does
every epoch (``ccafl.association.clusters``): per-camera local clusters, global Infomap
clusters, pivot refinement. Each set is scored against the true person ids with CALR's Fig. 5
metrics (``ccafl.association.quality.calr_cluster_quality``). The features are CCAFL's, not a
CALR-trained model's: this measures the clustering rules on this project's worlds, not the
USL mode's accuracy. It reads ``train_truth.parquet``: a measuring tool, never training.

    python scripts/calr_replay.py . --out calr-replay.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ccafl.association.clusters import (
    cluster_within_cameras,
    global_clusters,
    refine_by_pivots,
    select_pivots,
)
from ccafl.association.quality import calr_cluster_quality
from ccafl.inference.checkpoints import load_checkpoint
from ccafl.settings import Settings
from ccafl.training.loop import train_features
from ccafl.training.state import TrainingData, TrainingState


def checkpoints(results: Path, which: list[str]) -> list[tuple[str, Path]]:
    epochs = sorted((results / "inter").glob("epoch_*/checkpoint.pt"))
    named = {"intra": results / "intra" / "checkpoint.pt", "last": epochs[-1] if epochs else None}
    return [(name, named[name]) for name in which if named.get(name) is not None]


def replay(run: Path, which: list[str], args: argparse.Namespace) -> list[dict]:
    results = next((run / "results").iterdir())
    rows = []
    for name, path in checkpoints(results, which):
        settings = Settings.from_config(load_checkpoint(path)["config"])
        root = Path(settings.dataset.root)
        data = TrainingData.load(root if root.is_absolute() else run / root, results / "ics",
                                 results / "prompt")  # fmt: skip
        state = TrainingState.resume(path, settings, None, data.n_gids)
        features = train_features(state, data, f"{name} features").numpy()
        truth_table = pd.read_parquet(results / "ics" / "train_truth.parquet")
        truth = data.train[["path"]].merge(truth_table, on="path", how="left")["pid"].to_numpy()
        cameras = np.asarray(data.cameras)
        local = cluster_within_cameras(
            features, cameras, images_per_cluster=args.images_per_cluster
        )
        glob, graph = global_clusters(features, k=args.k, min_similarity=args.min_similarity)
        for rule in ("densest", "last_above_mean"):
            refined = refine_by_pivots(
                glob, local, cameras, select_pivots(glob, graph.score, rule=rule)
            )
            quality = calr_cluster_quality(glob, refined, local, cameras, truth)
            for kind, q in quality.items():
                if kind != "refined" and rule != "densest":
                    continue
                label = f"refined ({rule})" if kind == "refined" else kind
                rows.append({"run": run.name, "checkpoint": name, "set": label, **q})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with results/<name>/)")
    parser.add_argument("--checkpoints", nargs="+", default=["intra", "last"])
    parser.add_argument("--images-per-cluster", type=int, default=5)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--min-similarity", type=float, default=0.5)
    parser.add_argument("--out", type=Path, help="write every row as JSON lines here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in replay(run, args.checkpoints, args)]
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"\n{'run':10s} {'checkpoint':10s} {'set':26s} {'n':>5s} {'pair F':>7s} {'BCubed P':>8s} "
          f"{'BCubed R':>8s} {'BCubed F':>8s} {'expansion':>9s}")  # fmt: skip
    for r in rows:
        print(f"{r['run']:10s} {r['checkpoint']:10s} {r['set']:26s} {int(r['n']):5d} "
              f"{r['pairwise_f_score']:7.3f} {r['bcubed_precision']:8.3f} {r['bcubed_recall']:8.3f} "
              f"{r['bcubed_f_score']:8.3f} {r['expansion']:9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
