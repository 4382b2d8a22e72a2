"""Resume is exact: epochs resumed one by one from checkpoints equal the same epochs trained in
one process, bit for bit on CPU, across the switch on of ICAL (Eq. 20).

The README promises that a checkpoint holds model, both optimizers, classifier, memories and
every RNG state, so that an interrupted run continues as if it had never stopped. A resume that
forgets one of them still trains fine and passes a restart test that starts twice from the same
checkpoint; it only shows once the chain goes on, which is what these tests follow.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from ccafl.inference.checkpoints import load_checkpoint
from ccafl.seeding import seed_everything
from ccafl.settings import Settings
from ccafl.training.common import rng_state
from ccafl.training.state import TrainingState

CHAIN = (3, 4, 5)  # stage-3 epochs after the 2 stage-2 epochs; ICAL from epoch 4
ARTIFACTS = ("graph.parquet", "labels.parquet", "log.parquet")

# What a resume may lose, named for the assertion messages.
PART_NAMES = {
    "optimizer": "the backbone optimizer state (Adam moments, step count)",
    "classifier_optimizer": "the classifier optimizer state",
    "classifier": "the global-id classifier",
    "rng": "the RNG states",
    "rng_per_rank": "the per-rank RNG states",
    "memories": "the memories",
    "epoch": "the epoch counter",
    "model": "the backbone weights",
}


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths (``optimizer.state.0.exp_avg``) where two checkpoint parts are not bit-identical."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a))} vs {sorted(map(str, b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}".lstrip("."))]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} length {len(a)} vs {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}.{i}")
        ]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [f"{where} (tensor)"]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [] if np.array_equal(a, b) else [f"{where} (array)"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"[:200]]


def chain_config(root: Path) -> dict:
    return tiny_config(root, train={"epochs": CHAIN[-1], "adv_start": 4})


def scramble_rng() -> None:
    """A fresh process does not start where the previous job's RNGs stopped."""
    seed_everything(random.SystemRandom().randrange(2**31))


def test_resume_restores_every_part_of_the_checkpoint(tiny_dataset: dict, intra_run: dict) -> None:
    """Unit form: right after resume, the state holds exactly what the checkpoint holds."""
    path = intra_run["checkpoint"]
    checkpoint = load_checkpoint(path)
    scramble_rng()
    state = TrainingState.resume(
        path,
        Settings.from_config(intra_run["config"]),
        tiny_dataset["clip"],
        intra_run["data"].n_gids,
    )
    restored = {
        "rng": rng_state(),  # first: anything after resume may draw random numbers
        "model": state.module.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "classifier": state.classifier.state_dict(),
        "classifier_optimizer": state.classifier_optimizer.state_dict(),
        "epoch": state.epoch,
        "memories": state.extra["memories"],
    }
    for part, value in restored.items():
        diff = differences(value, checkpoint[part], part)
        assert not diff, (
            f"TrainingState.resume does not restore {PART_NAMES[part]} from the checkpoint: "
            f"{diff[:3]}"
        )


@pytest.fixture(scope="module")
def chains(tiny_dataset: dict, intra_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same epochs 3-5 twice: in one go (one job running the block, as with
    ``train.epochs_per_job: 3``), and resumed from the previous epoch's checkpoint before each
    epoch in a process whose RNGs start elsewhere (one job per epoch)."""
    from ccafl.training import inter

    config = chain_config(tiny_dataset["root"])
    data, clip = intra_run["data"], tiny_dataset["clip"]
    base = tmp_path_factory.mktemp("resume_chain")
    prototypes: dict[str, list] = {"one_go": [], "resumed": []}
    real_from_features = inter.PrototypeMemory.from_features

    def recording(run: str):
        def from_features(features, labels):
            memory = real_from_features(features, labels)
            prototypes[run].append(memory)  # updated in place during its epoch
            return memory

        return staticmethod(from_features)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inter.PrototypeMemory, "from_features", recording("one_go"))
        one_go = base / "one_go"
        inter.run_inter_epochs(
            Settings.from_config(config),
            data,
            intra_run["checkpoint"],
            clip,
            list(CHAIN),
            [one_go / f"epoch_{e:03d}" for e in CHAIN],
        )
        patch.setattr(inter.PrototypeMemory, "from_features", recording("resumed"))
        resumed = base / "resumed"
        previous = intra_run["checkpoint"]
        for epoch in CHAIN:
            scramble_rng()
            out = resumed / f"epoch_{epoch:03d}"
            inter.run_inter_epochs(
                Settings.from_config(config), data, previous, clip, [epoch], [out]
            )
            previous = out / "checkpoint.pt"
    final = {run: [m.prototypes.clone() for m in memories] for run, memories in prototypes.items()}
    return {"resumed": resumed, "one_go": one_go, "prototypes": final}


@pytest.mark.parametrize("epoch", CHAIN)
def test_resumed_epoch_equals_the_epoch_trained_in_one_go(chains: dict, epoch: int) -> None:
    folder = f"epoch_{epoch:03d}"
    resumed = load_checkpoint(chains["resumed"] / folder / "checkpoint.pt")
    one_go = load_checkpoint(chains["one_go"] / folder / "checkpoint.pt")
    resumed.pop("saved_at")
    one_go.pop("saved_at")
    assert resumed.keys() == one_go.keys()
    # Restored parts first: the first one named is the likeliest cause of the others.
    parts = [p for p in PART_NAMES if p in resumed] + sorted(set(resumed) - set(PART_NAMES))
    diff = {p: d for p in parts if (d := differences(resumed[p], one_go[p], p))}
    assert not diff, (
        f"epoch {epoch} resumed from epoch {epoch - 1}'s checkpoint differs from the same epoch "
        f"trained in one process in {', '.join(PART_NAMES.get(p, p) for p in diff)}: resume "
        "does not restore everything the checkpoint holds; first differences: "
        f"{[d for ds in diff.values() for d in ds[:1]]}"
    )
    at = CHAIN.index(epoch)
    diff = differences(chains["prototypes"]["resumed"][at], chains["prototypes"]["one_go"][at])
    assert not diff, (
        f"epoch {epoch} resumed from epoch {epoch - 1}'s checkpoint ends with other inter-camera "
        "prototypes (Eq. 13 memory) than the same epoch trained in one go: resume is not exact"
    )
    for name in ARTIFACTS:
        a = pd.read_parquet(chains["resumed"] / folder / name)
        b = pd.read_parquet(chains["one_go"] / folder / name)
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as error:
            raise AssertionError(
                f"epoch {epoch}: {name} after a resume differs from the uninterrupted run "
                f"(resume is not exact): {error}"
            ) from None


def test_the_chain_crosses_the_ical_switch(chains: dict) -> None:
    """Guards the test itself: ICAL must switch on inside the compared chain."""
    logs = {e: pd.read_parquet(chains["one_go"] / f"epoch_{e:03d}" / "log.parquet") for e in CHAIN}
    assert "loss_ical" not in logs[3].columns and "loss_ical" in logs[4].columns
    # The optimizers carry state across epochs (otherwise dropping them could not be seen).
    checkpoint = load_checkpoint(chains["one_go"] / "epoch_005" / "checkpoint.pt")
    steps = {float(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
    assert steps and min(steps) > len(logs[5]), steps
