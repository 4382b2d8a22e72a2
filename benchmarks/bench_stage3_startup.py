"""Benchmark: the start-up of a stage-3 job, and the share of a job it costs at paper scale.

A stage-3 job (`python -m ccafl inter-epoch`, one per block of ``train.epochs_per_job``
epochs) pays its start-up once: the Python imports, the config check, the bare model build,
the previous checkpoint's load (model, Adam state, classifier and its optimizer), the data index
(`TrainingData.load`), the decoding of every training image into the in-memory cache
(``train.image_cache``) and the first batch of the loader. Each is measured here on the CPU, in
this process or (imports) in fresh interpreters, with the real functions the job calls:

* imports: a fresh interpreter importing what `python -m ccafl inter-epoch` imports, minus a
  bare interpreter's start; the gpu_lease wrapper the GPU rules put in front is one more;
* model build: `build_reid_model(..., weights=False)` for the tiny CLIP and for RN50 at 256x128;
* checkpoint: an RN50 training checkpoint with Market-1501's 3,262-gid classifier and filled
  Adam states, written by `TrainingState.save` and read back by the job's header check and
  `TrainingState.resume` (warm page cache: a cold read from a network file system adds to it);
* data index: `TrainingData.load` of a generated Market-size train.parquet (12,936 rows),
  text_features.parquet and prompt_tokens.pt;
* image cache: `decode_images` of generated 128x64 JPEGs (Market-1501's size) to 256x128, one
  thread, per image, then scaled to the dataset's training images;
* loader start: the first batch of 128 from the image cache (tensor augmentation), and from
  DataLoader workers decoding files (``train.image_cache: false``; its CPU column counts the
  main process only, the workers' decoding is not in it).

Baseline, measured in the same run: one RN50 training step on the CPU (forward, backward and
Adam at 256x128) of --baseline-batch images; every component is printed as a ratio of it.

Every figure is taken twice: wall seconds, and CPU seconds of this process (or of the child
interpreters) with one torch thread. The overhead estimate uses the CPU seconds: a job's
start-up is single-process CPU work, so on a dedicated GPU node its wall time is close to its
CPU time, while the wall time measured here grows with whatever else runs on the machine.

There is no GPU here, so the epoch it is set against is estimated from FLOPs: the forward and
backward FLOPs of RN50 at 256x128 counted by torch's FlopCounterMode, times the images of an
epoch (iterations x batch 128, plus the un-augmented feature pass over every training image
for the association), divided by an assumed achieved throughput. That throughput is NVIDIA
DeepLearningExamples' ResNet-50 v1.5 PyTorch training figure on one A100 80GB with mixed
precision (2,470 img/s at 224x224, their README, pytorch-21.03 container), converted to FLOP/s
with the same counter, and twice that for an H100 (assumed). The association itself (faiss on
the gid centroids) and the per-epoch checkpoint write are per-epoch work that blocks do not
save; the write is measured here and added to the epoch. CUDA initialisation is not measured
(no GPU): --cuda-init-s (default 2 s) is added to the start-up as an assumption.

    python benchmarks/bench_stage3_startup.py      # a few minutes on 2 quiet cores
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.05
BATCH = 128  # P16 x K8, the paper's batch
# Training images (CCAFL paper, Table I; DukeMTMC-reID and MSMT17 as their authors publish).
DATASETS = {"market1501": 12_936, "dukemtmc": 16_522, "msmt17": 32_621}
MARKET_IDS_PER_CAMERA = [652, 541, 694, 241, 576, 558]  # 3,262 ICS ids
# NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5, 1x A100 80GB, mixed precision.
A100_REFERENCE_IMAGES_PER_S = 2470
H100_OVER_A100 = 2.0  # assumed
BLOCKS = (1, 5, 10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: CPU seconds = work)"
    )
    parser.add_argument("--baseline-batch", type=int, default=8, help="images of the CPU step")
    parser.add_argument("--decode-images", type=int, default=256, help="JPEGs decoded, timed")
    parser.add_argument("--cuda-init-s", type=float, default=2.0, help="assumed CUDA start-up")
    parser.add_argument(
        "--decode-threads",
        type=int,
        default=4,
        help="threads of the image cache on a GPU node (decode_images' default in the job)",
    )
    parser.add_argument(
        "--loader-workers", type=int, default=2, help="DataLoader workers of the file loader"
    )
    return parser.parse_args(argv)


class Seconds(tuple):
    """(wall, cpu) seconds of one measurement."""

    wall = property(lambda self: self[0])
    cpu = property(lambda self: self[1])

    def __sub__(self, other: Seconds) -> Seconds:
        return Seconds((self.wall - other.wall, self.cpu - other.cpu))

    def __add__(self, other: Seconds) -> Seconds:
        return Seconds((self.wall + other.wall, self.cpu + other.cpu))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(function, repeats: int = 1, children: bool = False) -> Seconds:
    """Median wall and CPU seconds of ``repeats`` calls (CPU of this process, or of the child
    processes it waited for when ``children``)."""
    walls, cpus = [], []
    clock = _children_cpu if children else time.process_time
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), clock()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(clock() - start_cpu)
    return Seconds((statistics.median(walls), statistics.median(cpus)))


def python_seconds(code: str, repeats: int = 3) -> Seconds:
    """Median seconds of a fresh interpreter running ``code`` (from the repository)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }

    def run() -> None:
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)

    run()  # warm the file cache once
    return timed(run, repeats, children=True)


STAGE3_IMPORTS = """
import ccafl.cli
ccafl.cli.build_parser()
from ccafl import distributed
from ccafl.association.diagnostics import EpochDiagnostics
from ccafl.inference.checkpoints import load_checkpoint
from ccafl.training.inter import run_inter_epochs
from ccafl.training.state import TrainingData
"""


def market_tables(folder: Path, text_dim: int, n_images: int, seed: int = 0):
    """train.parquet, text_features.parquet, prompt_tokens.pt of a Market-size ICS run."""
    import numpy as np
    import pandas as pd
    import torch

    rng = np.random.default_rng(seed)
    n_gids = sum(MARKET_IDS_PER_CAMERA)
    counts = 1 + rng.multinomial(n_images - n_gids, np.full(n_gids, 1 / n_gids))
    camera_of_gid = np.repeat(np.arange(6), MARKET_IDS_PER_CAMERA)
    intra_of_gid = np.concatenate([np.arange(n) for n in MARKET_IDS_PER_CAMERA])
    gids = np.repeat(np.arange(n_gids), counts)
    train = pd.DataFrame(
        {
            "path": [f"bounding_box_train/{i:05d}.jpg" for i in range(len(gids))],
            "camera": camera_of_gid[gids],
            "camera_name": [f"c{c + 1}" for c in camera_of_gid[gids]],
            "intra_id": intra_of_gid[gids],
            "gid": gids,
        }
    )
    train.to_parquet(folder / "train.parquet", index=False)
    features = rng.normal(size=(n_gids, text_dim)).astype(np.float32)
    pd.DataFrame(
        {
            "gid": np.arange(n_gids),
            "camera": camera_of_gid,
            "intra_id": intra_of_gid,
            "feature": list(features),
        }
    ).to_parquet(folder / "text_features.parquet", index=False)
    tokens = torch.randn(n_gids, 5, text_dim)
    torch.save({"tokens": tokens, "logit_scale": 100.0}, folder / "prompt_tokens.pt")
    return train


def market_like_jpegs(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 128x64 JPEGs (Market-1501's crop size) with smooth, photo-like content."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    (root / "jpegs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((64, 128), Image.Resampling.BILINEAR)
        noise = rng.normal(0, 8, (128, 64, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        path = f"jpegs/{i:05d}.jpg"
        Image.fromarray(pixels).save(root / path, quality=90)
        paths.append(path)
    return paths


def count_flops(model, images, backward: bool) -> int:
    """FLOPs (multiply and add counted apart) of a forward, or a forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        outputs = model(images)
        if backward:
            loss = sum(
                o.float().sum() for o in (outputs if isinstance(outputs, tuple) else [outputs])
            )
            loss.backward()
    if backward:
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: everything here runs on the CPU
    sys.path.insert(0, str(REPO))
    results: dict[str, Seconds] = {}

    # 1. Fresh interpreters: a bare one, the stage's imports, the gpu_lease wrapper.
    bare = python_seconds("pass")
    results["imports"] = python_seconds(STAGE3_IMPORTS) - bare
    results["gpu_lease wrapper process"] = python_seconds("import ccafl.gpu_lease")
    print(f"interpreter start {bare.cpu:.2f} CPU-s (paid by every job; counted with the imports)")
    results["imports"] += bare

    import torch
    import torch.nn.functional as F

    from ccafl.checks import check_config
    from ccafl.config import load_config
    from ccafl.data.images import decode_images
    from ccafl.inference.checkpoints import load_checkpoint
    from ccafl.models.factory import build_reid_model
    from ccafl.seeding import seed_everything
    from ccafl.settings import Settings
    from ccafl.training.loop import epoch_loader
    from ccafl.training.state import TrainingData, TrainingState

    torch.set_num_threads(args.threads)
    seed_everything(0)
    paper = {
        "dataset": {"name": "market1501", "format": "market1501", "root": "unused"},
        "clip": {"model": "RN50", "pretrained": None},
        "input": {"height": 256, "width": 128},
        "train": {"P": 16, "K": 8, "num_workers": 0, "epochs": 80, "adv_start": 40},
    }
    tiny = {
        "clip": {"model": "ccafl-tiny-rn", "pretrained": None},
        "input": {"height": 64, "width": 32},
    }
    config = load_config(None, paper)
    results["config check"] = timed(lambda: check_config(load_config(None, paper)), 3)

    # 2. Model build, bare architecture (its weights come from the checkpoint next).
    results["model build, tiny CLIP"] = timed(
        lambda: build_reid_model(Settings.from_config(load_config(None, tiny)), weights=False), 3
    )
    results["model build, RN50 256x128"] = timed(
        lambda: build_reid_model(Settings.from_config(config), weights=False), 2
    )

    with tempfile.TemporaryDirectory(prefix="bench_stage3_") as tmp:
        tmp = Path(tmp)
        # 3. An RN50 training checkpoint: model, classifier, both Adam states filled.
        n_gids = sum(MARKET_IDS_PER_CAMERA)
        state = TrainingState.create(Settings.from_config(config), None, n_gids)
        for module, optimizer in (
            (state.model, state.optimizer),
            (state.classifier, state.classifier_optimizer),
        ):
            for p in module.parameters():
                p.grad = torch.zeros_like(p)
            optimizer.step()
        state.epoch = 6
        path = tmp / "checkpoint.pt"
        results["checkpoint write (per epoch)"] = timed(lambda: state.save(path))
        size_mb = path.stat().st_size / 2**20
        results["checkpoint header check"] = timed(
            lambda: load_checkpoint(path, epoch=6, mmap=True), 3
        )
        resume = timed(
            lambda: TrainingState.resume(path, Settings.from_config(config), None, n_gids), 2
        )
        results["checkpoint load (resume - build)"] = Seconds(
            max(0.0, v) for v in resume - results["model build, RN50 256x128"]
        )
        model = state.model
        text_dim = int(model.proj_dim)

        # 4. The data index of a Market-size run.
        ics, prompt = tmp / "ics", tmp / "prompt"
        ics.mkdir()
        prompt.mkdir()
        market_tables(ics, text_dim, DATASETS["market1501"])
        (prompt / "text_features.parquet").write_bytes((ics / "text_features.parquet").read_bytes())
        (prompt / "prompt_tokens.pt").write_bytes((ics / "prompt_tokens.pt").read_bytes())
        results["data index (TrainingData.load)"] = timed(
            lambda: TrainingData.load(tmp, ics, prompt), 3
        )

        # 5. Image cache: per image, one thread.
        jpegs = market_like_jpegs(tmp, args.decode_images)
        decode_images(tmp, jpegs[:16], (256, 128), threads=1)  # warm up PIL
        per_image = timed(lambda: decode_images(tmp, jpegs, (256, 128), threads=1), 2).cpu / len(
            jpegs
        )

        # 6. Loader start: the first batch of an epoch.
        data = TrainingData.load(tmp, ics, prompt)
        data.train["path"] = [jpegs[i % len(jpegs)] for i in range(len(data.train))]
        labels = data.gids
        settings = Settings.from_config(config)
        probe = TrainingState(settings, model, None, None, None, torch.device("cpu"))
        data.images = torch.zeros((len(data.train), 3, 256, 128), dtype=torch.uint8)
        results["loader start, image cache"] = timed(
            lambda: next(iter(epoch_loader(probe, data, labels, 7))), 3
        )
        data.images = None
        workers = settings.train.replace(num_workers=args.loader_workers)
        probe.settings = settings.replace(train=workers)
        results[f"loader start, {args.loader_workers} workers decoding files"] = timed(
            lambda: next(iter(epoch_loader(probe, data, labels, 7))), 2
        )

    # Baseline: one RN50 training step on the CPU.
    images = torch.randn(args.baseline_batch, 3, 256, 128)
    head = torch.nn.Linear(model.feat_dim, n_gids)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3.5e-4)
    targets = torch.randint(0, n_gids, (args.baseline_batch,))

    def step() -> None:
        f, p = model(images)
        loss = F.cross_entropy(head(f), targets) + 0 * p.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    step()  # warm-up
    baseline_seconds = timed(step, 2)
    baseline = baseline_seconds.cpu

    # FLOPs of RN50 at 256x128 (per image) and of torchvision's ResNet-50 at 224x224.
    one = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        forward_flops = count_flops(model.eval(), one, backward=False) / 2
    train_flops = count_flops(model.train(), one, backward=True) / 2
    cpu_tflops = train_flops * args.baseline_batch / baseline / 1e12
    import torchvision

    reference = torchvision.models.resnet50()
    reference_flops = count_flops(reference.train(), torch.randn(2, 3, 224, 224), True) / 2
    a100 = A100_REFERENCE_IMAGES_PER_S * reference_flops
    throughputs = {"A100 (reference)": a100, "H100 (2x, assumed)": H100_OVER_A100 * a100}

    # ---------------------------------------------------------------------------- printout
    print(
        f"\nstage-3 job start-up on this CPU ({torch.get_num_threads()} torch threads, load "
        f"average {os.getloadavg()[0]:.1f}); baseline: one RN50 training step of "
        f"{args.baseline_batch} images at 256x128 = {baseline:.2f} CPU-s "
        f"({baseline_seconds.wall:.2f} s wall, {cpu_tflops:.3f} TFLOP/s)"
    )
    print(f"  {'component':44s} {'CPU-s':>8s} {'wall s':>8s} {'x baseline':>11s}")
    for name, seconds in results.items():
        print(f"  {name:44s} {seconds.cpu:8.3f} {seconds.wall:8.3f} {seconds.cpu / baseline:11.3f}")
    print(f"  checkpoint size {size_mb:.0f} MiB (RN50 + 3,262-gid classifier + Adam states)")
    print(
        f"  image cache decode per image (128x64 JPEG -> 256x128, 1 thread): "
        f"{1000 * per_image:.3f} ms = {per_image / baseline:.4f} x baseline"
    )
    print(
        f"FLOPs per image, RN50 256x128: forward {forward_flops / 1e9:.2f} G, forward + backward "
        f"{train_flops / 1e9:.2f} G; ResNet-50 224x224 forward + backward "
        f"{reference_flops / 1e9:.2f} G"
    )
    for name, flops in throughputs.items():
        print(f"achieved throughput {name}: {flops / 1e12:.0f} TFLOP/s")

    fixed_names = [
        "imports",
        "gpu_lease wrapper process",
        "config check",
        "model build, RN50 256x128",
        "checkpoint header check",
        "checkpoint load (resume - build)",
        "data index (TrainingData.load)",
        "loader start, image cache",
    ]
    fixed = sum(results[name].cpu for name in fixed_names) + args.cuda_init_s
    print(
        f"\nfixed start-up per job: {fixed:.1f} s (the components above with the image-cache "
        f"loader, + {args.cuda_init_s:.1f} s CUDA initialisation assumed), plus the image cache: "
        f"{1000 * per_image / args.decode_threads:.3f} ms per training image "
        f"({args.decode_threads} threads, linear scaling assumed)"
    )
    print(
        f"epoch = (iterations x {BATCH} images forward + backward + every training image "
        "forward once for the association) / throughput + the checkpoint write"
    )
    recommended = {}
    for dataset, n_images in DATASETS.items():
        startup = fixed + n_images * per_image / args.decode_threads
        iterations = n_images // BATCH
        epoch_flops = iterations * BATCH * train_flops + n_images * forward_flops
        for name, flops in throughputs.items():
            epoch = epoch_flops / flops + results["checkpoint write (per epoch)"].cpu
            shares = "  ".join(f"{n} epochs {100 * startup / (n * epoch):5.1f}%" for n in BLOCKS)
            needed = math.ceil(startup / (GOAL * epoch))
            recommended[dataset] = max(recommended.get(dataset, 0), needed)
            print(
                f"  {dataset:10s} {name:18s} epoch {epoch:5.1f} s, start-up {startup:5.1f} s: "
                f"{shares}; under {100 * GOAL:.0f}% from {needed} epochs per job"
            )
    print(
        "recommended train.epochs_per_job (under 5% on the faster GPU): "
        + ", ".join(f"{d} {n}" for d, n in recommended.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
