"""Benchmark: what CCAFL's losses and memories add to a training step, over a bare step.

Baseline, measured in the same run on the same model, batch and device: forward, a trivial
loss (cross-entropy of a linear ID head on f, plus 0 * p so both outputs are in the graph),
backward and an Adam step: the cost of training the backbone at all.

CCAFL steps are the real training loops, not a re-implementation:
``ccafl.training.intra.intra_epoch`` (stage 2: L_intra1 + L_intra2 on the camera's
IntraCameraMemories, L_i2tce_intra, backbone Adam step, L_GID step of the CosineClassifier with
its own optimizer, memory update, loss logging) and ``ccafl.training.inter.inter_epoch``
(stage 3 at an epoch >= E_adv: L_IPCL on the PrototypeMemory, L_i2tce_inter, L_ICAL,
classifier step, prototype update). Only their data loader is replaced, by in-memory batches
whose image indices come from the real PKBatchSampler over a fake ICS layout (cameras, intra
IDs, gids; the demo: like the embedded synthetic benchmark, --paper: Market-1501's 3,262 gids
over 6 cameras and 12,936 images), with random memories, text features and pseudo-labels.
A step's time is the time between two batch requests of the loop, so per-epoch set-up is not
counted; the loops run in alternating rounds with the baseline, and the figure is the median
step after warm-up. The same three loops also run with a stub backbone (fixed features, no
convolutions), which isolates what the losses, memories and classifier cost by themselves;
that difference in milliseconds is the steadier figure when other processes share the CPU
(so is `--threads 1`: oversubscribed OpenMP threads make every small op slow).

    python benchmarks/bench_step_overhead.py              # tiny CLIP, 64x32, batch 64 (seconds)
    python benchmarks/bench_step_overhead.py --paper      # RN50, 256x128, batch 128 (minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.15
# Market-1501's intra-camera IDs per camera (751 people -> 3,262 ICS IDs) and image count.
MARKET_IDS_PER_CAMERA = [652, 541, 694, 241, 576, 558]
MARKET_IMAGES = 12_936


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--paper", action="store_true", help="RN50, 256x128, P16 x K8")
    parser.add_argument(
        "--steps", type=int, help="timed steps per kind of step, all rounds (default 30; --paper 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed steps at the start of every loop (default 2; --paper 1)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of baseline, stage 2, stage 3 loops, alternating so that load from other "
        "processes hits all three alike (default 6; --paper 1)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cpu (default) or cuda"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; 1 is steadier on a busy machine)",
    )
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.paper else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.paper else 2)
    args.rounds = min(args.steps, args.rounds or (1 if args.paper else 6))
    return args


def fake_ics_table(config: dict, paper: bool, seed: int = 0):
    """A train.parquet-like table: path, camera, intra_id, gid (ordered by camera, intra_id)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    if paper:
        ids_per_camera, n_images = MARKET_IDS_PER_CAMERA, MARKET_IMAGES
    else:
        synthetic = config["synthetic"]
        n_cameras = synthetic["n_cameras"]
        cams_per_id = sum(synthetic["cameras_per_id"]) / 2
        frames = sum(synthetic["frames_per_camera"]) / 2
        per_camera = round(synthetic["n_train_ids"] * cams_per_id / n_cameras)
        ids_per_camera = [per_camera] * n_cameras
        n_images = round(sum(ids_per_camera) * frames)
    n_gids = sum(ids_per_camera)
    # Every gid gets at least one image; the rest are spread at random.
    counts = 1 + rng.multinomial(n_images - n_gids, np.full(n_gids, 1 / n_gids))
    camera_of_gid = np.repeat(np.arange(len(ids_per_camera)), ids_per_camera)
    intra_of_gid = np.concatenate([np.arange(n) for n in ids_per_camera])
    gids = np.repeat(np.arange(n_gids), counts)
    return pd.DataFrame(
        {
            "path": [f"img{i}.jpg" for i in range(len(gids))],
            "camera": camera_of_gid[gids],
            "camera_name": [f"c{c + 1}" for c in camera_of_gid[gids]],
            "intra_id": intra_of_gid[gids],
            "gid": gids,
        }
    )


def fake_association(train, rng):
    """Pseudo-labels as association produces them: each person's gids, one per camera."""
    import numpy as np
    import pandas as pd

    from ccafl.association.pseudo_labels import Association

    per_gid = train.drop_duplicates("gid").sort_values("gid")
    cameras = per_gid["camera"].to_numpy()
    n_cameras = int(cameras.max()) + 1
    # About 751/3262 people per gid on Market-1501: ~4 gids (cameras) per person.
    n_people = max(2, round(len(per_gid) / max(2, n_cameras * 0.7)))
    labels = np.empty(len(per_gid), dtype=np.int64)
    for camera in range(n_cameras):
        members = np.flatnonzero(cameras == camera)
        labels[members] = rng.choice(n_people, size=len(members), replace=len(members) > n_people)
    _, labels = np.unique(labels, return_inverse=True)  # contiguous, every label used
    edges = pd.DataFrame(columns=["src_gid", "dst_gid", "src_camera", "dst_camera", "distance"])
    return Association(labels, edges, labels[train["gid"].to_numpy()])


class TimedBatches:
    """An iterable standing in for the DataLoader: yields ready batches, records the time of
    every batch request (the last one is the request that ends the loop)."""

    def __init__(self, batches: list, sync) -> None:
        self.batches, self.sync, self.stamps = batches, sync, []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        for batch in self.batches:
            self.sync()
            self.stamps.append(time.perf_counter())
            yield batch
        self.sync()
        self.stamps.append(time.perf_counter())

    def step_seconds(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)][warmup:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: pick_device() must see no GPU
    sys.path.insert(0, str(REPO))

    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from ccafl.config import load_config
    from ccafl.data.samplers import PKBatchSampler
    from ccafl.memory import IntraCameraMemories
    from ccafl.seeding import seed_everything
    from ccafl.settings import Settings
    from ccafl.training import inter as inter_module
    from ccafl.training import intra as intra_module
    from ccafl.training.common import LossLog
    from ccafl.training.state import TrainingData, TrainingState

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict = {"clip": {"pretrained": None}, "train": {"num_workers": 0}}
    if args.paper:
        overrides = {
            "clip": {"model": "RN50", "pretrained": None},
            "input": {"height": 256, "width": 128},
            "train": {"P": 16, "K": 8, "num_workers": 0},
        }
    config = load_config(args.config, overrides)
    train_cfg = config["train"]
    seed_everything(0)
    rng = np.random.default_rng(0)

    table = fake_ics_table(config, args.paper)
    n_gids = int(table["gid"].max()) + 1
    state = TrainingState.create(Settings.from_config(config), None, n_gids)
    device = state.device
    if device.type != args.device:
        raise SystemExit(f"asked for {args.device} but training would run on {device}")
    model = state.model
    feat_dim, proj_dim = model.feat_dim, model.proj_dim

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape), dim=1)

    data = TrainingData(REPO, table, unit(n_gids, proj_dim), 100.0)  # CLIP's exp(logit_scale)
    features = unit(len(table), feat_dim)
    cameras = torch.tensor(table["camera"].to_numpy())
    intra_ids = torch.tensor(table["intra_id"].to_numpy())
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids).to(device)
    association = fake_association(table, rng)

    height, width = config["input"]["height"], config["input"]["width"]
    batch_size = train_cfg["P"] * train_cfg["K"]
    images = torch.randn(batch_size, 3, height, width)
    steps_per_round = -(-args.steps // args.rounds)
    n_batches = args.warmup + steps_per_round

    def batches(labels, groups, epoch: int) -> list:
        sampler = PKBatchSampler(
            labels, train_cfg["P"], train_cfg["K"], n_batches, groups=groups, seed=0, epoch=epoch
        )
        return [(images[: len(index)], torch.as_tensor(index)) for index in sampler]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The baseline: same model and optimizer settings; a linear ID head as the trivial loss.
    head = torch.nn.Linear(feat_dim, n_gids).to(device)
    baseline_optimizer = torch.optim.Adam(
        [*model.parameters(), *head.parameters()],
        lr=train_cfg["lr"],
        weight_decay=train_cfg["weight_decay"],
    )
    gids = torch.tensor(data.gids)

    def baseline_loop(net: torch.nn.Module, loader: TimedBatches) -> None:
        net.train()
        for batch, index in loader:
            with state.autocast():
                f, p = net(batch.to(device, non_blocking=True))
            f, p = f.float(), p.float()
            loss = F.cross_entropy(head(f), gids[index].to(device)) + 0 * p.sum()
            baseline_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            baseline_optimizer.step()

    intra_epoch = 1
    inter_epoch = max(train_cfg["adv_start"], train_cfg["intra_epochs"] + 1)
    tqdm_off = mock.patch.object(tqdm, "__init__", _quiet_tqdm_init(tqdm.__init__))

    def run(kind: str, net: torch.nn.Module, round_: int) -> list[float]:
        """One loop of ``kind`` with ``net`` as the backbone; the timed steps' seconds."""
        if kind == "stage 3":
            loader = TimedBatches(batches(association.image_labels, None, round_), sync)
        else:
            loader = TimedBatches(batches(data.gids, data.cameras, round_), sync)
        if kind == "baseline":
            baseline_loop(net, loader)
            return loader.step_seconds(args.warmup)
        module = intra_module if kind == "stage 2" else inter_module
        state.model = net
        try:
            with (
                tqdm_off,
                mock.patch.object(module, "epoch_loader", lambda *a, **k: loader),
            ):
                if kind == "stage 2":
                    intra_module.intra_epoch(state, data, memories, intra_epoch, LossLog())
                else:
                    inter_module.inter_epoch(
                        state, data, association, features, inter_epoch, LossLog()
                    )
        finally:
            state.model = model
        return loader.step_seconds(args.warmup)

    kinds = ("baseline", "stage 2", "stage 3")
    print(
        f"model {config['clip']['model']} at {height}x{width}, batch {batch_size} "
        f"(P{train_cfg['P']} x K{train_cfg['K']}), {n_gids} gids over "
        f"{len(memories)} cameras, {len(table)} images, "
        f"{int(association.gid_labels.max()) + 1} pseudo-labels, device {device}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    # What the losses, memories and classifier cost by themselves: the same loops with a stub
    # backbone that returns fixed (f, p) through one scalar parameter. Cheap and, unlike the
    # end-to-end difference, hardly disturbed by other processes on the machine.
    stub = stub_backbone(batch_size, feat_dim, proj_dim).to(device)
    alone = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        for kind in kinds:
            alone[kind].extend(run(kind, stub, round_))
    times = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        for kind in kinds:
            times[kind].extend(run(kind, model, round_))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    def spread(values: list[float]) -> str:
        if len(values) < 4:
            return ""
        q1, _, q3 = statistics.quantiles(values, n=4)
        return f"  (quartiles {1000 * q1:.1f}-{1000 * q3:.1f})"

    base = statistics.median(times["baseline"])
    stub_base = statistics.median(alone["baseline"])
    print(
        f"median step over {len(times['baseline'])} steps of each kind "
        f"({args.rounds} alternating rounds, {args.warmup} warm-up steps per loop):"
    )
    print(
        f"  baseline (forward + ID head CE + backward + Adam): {1000 * base:9.1f} ms"
        f"{spread(times['baseline'])}"
    )
    worst = worst_alone = 0.0
    for kind in ("stage 2", "stage 3"):
        step = statistics.median(times[kind])
        overhead = step / base - 1
        extra = statistics.median(alone[kind]) - stub_base
        worst, worst_alone = max(worst, overhead), max(worst_alone, extra / base)
        print(
            f"  CCAFL {kind} step:{1000 * step:20.1f} ms{spread(times[kind])}\n"
            f"    end to end: ratio {step / base:.3f}x, overhead {100 * overhead:+.1f}%\n"
            f"    losses + memories + classifier alone (stub backbone): {1000 * extra:+.1f} ms "
            f"= {100 * extra / base:+.1f}% of the baseline step"
        )
    print(
        f"  goal overhead <= {100 * GOAL:.0f}%: end to end {'met' if worst <= GOAL else 'MISSED'}"
        f", from the stub measurement {'met' if worst_alone <= GOAL else 'MISSED'}"
    )
    return 0


def stub_backbone(batch_size: int, feat_dim: int, proj_dim: int):
    """A backbone that costs nothing: fixed random (f, p), differentiable through one scale."""
    import torch
    from torch import nn

    class StubBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.feat_dim, self.proj_dim = feat_dim, proj_dim
            self.register_buffer("f", torch.randn(batch_size, feat_dim))
            self.register_buffer("p", torch.randn(batch_size, proj_dim))
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            n = images.shape[0]
            return self.f[:n] * self.scale, self.p[:n] * self.scale

    return StubBackbone()


def _quiet_tqdm_init(original):
    """tqdm as the loops create it, with its progress bar off (its bookkeeping stays)."""

    def init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    return init


if __name__ == "__main__":
    sys.exit(main())
