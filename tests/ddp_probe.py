"""Stages 2 and 3 with a per-rank dump of what DDP must keep identical (tests/test_distributed_sync.py).

    python tests/ddp_probe.py --config-json CFG --ics-dir D --prompt-dir D --clip F --out-dir D \
        [--inter-from CHECKPOINT] [--augment] [--bn-train]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_probe.py ...

Runs stage 2 (``run_intra``) and one stage-3 epoch (``run_inter_epochs``, from ``--inter-from``
or from this run's own stage-2 checkpoint). Only rank 0 writes checkpoints, so at every
checkpoint save each rank also writes ``<out>/dump/<stage>-rank<r>.pt``: backbone parameters,
classifier, intra-camera memories (stage 2), inter-camera prototypes (stage 3), and per step
the rank's own loss terms (before the average over ranks) and a digest of the torch RNG state
at each augmentation call.

By default the forward is made independent of how a batch is split over ranks: BatchNorm
layers use their running statistics and images are not augmented. Those are the two things
that legitimately differ between one process and several (per-rank batch statistics over a
rank's slice, per-rank augmentation draws); with them fixed, N processes must reproduce one
process up to float rounding. ``--augment`` and ``--bn-train`` keep them, to measure how much
each one moves the losses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

import ccafl.training.inter as inter
import ccafl.training.intra as intra
import ccafl.training.loop as loop
from ccafl import distributed
from ccafl.config import validate
from ccafl.data.transforms import normalize_uint8, test_transform
from ccafl.settings import Settings
from ccafl.training.state import TrainingData, TrainingState

_last_prototypes: dict[str, nn.Module] = {}
_steps: list[dict[str, float]] = []
_augment_rng: list[str] = []


def _no_augmentation() -> None:
    loop.tensor_train_transform = lambda height, width: normalize_uint8  # the image cache
    loop.train_transform = test_transform  # DataLoader workers (train.image_cache: false)


def _bn_on_running_statistics() -> None:
    real_start = TrainingState.start_epoch

    def start_epoch(self: TrainingState, epoch: int) -> float:
        lr = real_start(self, epoch)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return lr

    TrainingState.start_epoch = start_epoch


def _record_augmentation_draws() -> None:
    """A digest of the torch RNG state each time a batch is augmented: equal digests on two
    ranks mean the two ranks draw identical flips, crops and erasings."""
    real = loop.tensor_train_transform

    def transform(height: int, width: int):
        augment = real(height, width)

        def recorded(images: torch.Tensor) -> torch.Tensor:
            _augment_rng.append(hashlib.sha1(torch.get_rng_state().numpy()).hexdigest())
            return augment(images)

        return recorded

    loop.tensor_train_transform = transform


def _record_steps() -> None:
    real = loop.log_step  # the epoch engine's, for stages 2 and 3

    def log_step(loss_log, epoch, step, lr, loss, terms):
        mine = {k: float(v.detach()) for k, v in terms.items()}
        _steps.append({"epoch": epoch, "step": step, "loss": float(loss.detach()), **mine})
        real(loss_log, epoch, step, lr, loss, terms)

    loop.log_step = log_step


def _dump_at_save(dump_dir: Path) -> None:
    real_from_features = inter.PrototypeMemory.from_features
    real_save = TrainingState.save

    def from_features(features, labels):
        memory = real_from_features(features, labels)
        _last_prototypes["memory"] = memory
        return memory

    def save(self: TrainingState, path, **extra) -> None:
        stage = Path(path).parent.name
        dump = {
            "parameters": {k: v.detach().cpu() for k, v in self.module.named_parameters()},
            "classifier": {k: v.detach().cpu() for k, v in self.classifier.state_dict().items()},
            "steps": list(_steps),
            "augment_rng": list(_augment_rng),
        }
        _steps.clear()
        _augment_rng.clear()
        if "memories" in extra:
            dump["memories"] = {k: v.cpu() for k, v in extra["memories"].items()}
        if stage != "intra" and "memory" in _last_prototypes:
            dump["prototypes"] = _last_prototypes["memory"].prototypes.detach().cpu()
        dump_dir.mkdir(parents=True, exist_ok=True)
        torch.save(dump, dump_dir / f"{stage}-rank{distributed.rank()}.pt")
        real_save(self, path, **extra)

    inter.PrototypeMemory.from_features = staticmethod(from_features)
    TrainingState.save = save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True)
    for name in ("--ics-dir", "--prompt-dir", "--clip", "--out-dir"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--inter-from", type=Path, help="stage-2 checkpoint to start stage 3 from")
    parser.add_argument("--augment", action="store_true", help="keep the training augmentation")
    parser.add_argument("--bn-train", action="store_true", help="keep BatchNorm in training mode")
    args = parser.parse_args()
    config = validate(json.loads(args.config_json))
    if not args.augment:
        _no_augmentation()
    if not args.bn_train:
        _bn_on_running_statistics()
    _record_augmentation_draws()
    _record_steps()
    _dump_at_save(args.out_dir / "dump")
    distributed.init_from_env()
    data = TrainingData.load(config["dataset"]["root"], args.ics_dir, args.prompt_dir)
    intra.run_intra(Settings.from_config(config), data, args.clip, args.out_dir / "intra")
    start = args.inter_from or args.out_dir / "intra" / "checkpoint.pt"
    distributed.barrier()  # rank 0 has written the checkpoint the other ranks read
    epoch = config["train"]["intra_epochs"] + 1
    inter.run_inter_epochs(
        Settings.from_config(config),
        data,
        start,
        args.clip,
        [epoch],
        [args.out_dir / f"epoch_{epoch:03d}"],
    )
    distributed.shutdown()


if __name__ == "__main__":
    main()
