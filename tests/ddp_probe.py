"""Stages 2 and 3 with a per-rank dump of what DDP must keep identical (tests/test_distributed_sync.py).

    python tests/ddp_probe.py --config-json CFG --ics-dir D --prompt-dir D --clip F --out-dir D \
        [--inter-from CHECKPOINT]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_probe.py ...

Runs stage 2 (``run_intra``) and one stage-3 epoch (``run_inter_epoch``, from ``--inter-from``
or from this run's own stage-2 checkpoint). Only rank 0 writes checkpoints, so at every
checkpoint save each rank also writes ``<out>/dump/<stage>-rank<r>.pt``: backbone parameters,
classifier, intra-camera memories (stage 2) and inter-camera prototypes (stage 3).

The forward is made independent of how a batch is split over ranks: BatchNorm layers use their
running statistics and images are not augmented. Those are the two things that legitimately
differ between one process and several (per-rank batch statistics, per-rank augmentation
draws); with them fixed, N processes must reproduce one process up to float rounding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import ccafl.training.inter as inter
import ccafl.training.intra as intra
from ccafl import distributed
from ccafl.config import validate
from ccafl.data.transforms import test_transform
from ccafl.training.state import TrainingData, TrainingState

_last_prototypes: dict[str, nn.Module] = {}


def _deterministic_forward() -> None:
    intra.train_transform = test_transform  # the stage-2/3 loader's transform
    real_start = TrainingState.start_epoch

    def start_epoch(self: TrainingState, epoch: int) -> float:
        lr = real_start(self, epoch)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return lr

    TrainingState.start_epoch = start_epoch


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
        }
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
    args = parser.parse_args()
    config = validate(json.loads(args.config_json))
    _deterministic_forward()
    _dump_at_save(args.out_dir / "dump")
    distributed.init_from_env()
    data = TrainingData.load(config["dataset"]["root"], args.ics_dir, args.prompt_dir)
    intra.run_intra(config, data, args.clip, args.out_dir / "intra")
    start = args.inter_from or args.out_dir / "intra" / "checkpoint.pt"
    distributed.barrier()  # rank 0 has written the checkpoint the other ranks read
    epoch = config["train"]["intra_epochs"] + 1
    inter.run_inter_epoch(
        config, data, start, args.clip, epoch, args.out_dir / f"epoch_{epoch:03d}"
    )
    distributed.shutdown()


if __name__ == "__main__":
    main()
