"""DistributedDataParallel on CPU (gloo): 2 processes track 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_config

from ccafl.inference.checkpoints import load_checkpoint


def run_stage(tiny_dataset: dict, prompt_run: dict, out: Path, n_procs: int, *extra: str) -> None:
    config = tiny_config(
        tiny_dataset["root"], train={"intra_epochs": 3, "epochs": 4, "iters_per_epoch": 6}
    )
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(n_procs),
            "-m",
            "ccafl",
        ]
        if n_procs > 1
        else [sys.executable, "-m", "ccafl"]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            *launcher,
            *extra,
            "--set",
            json.dumps(config),
            "--ics-dir",
            str(tiny_dataset["ics"]),
            "--prompt-dir",
            str(prompt_run["dir"]),
            "--clip",
            str(tiny_dataset["clip"]),
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tiny_dataset: dict, prompt_run: dict) -> dict:
    base = tiny_dataset["base"] / "ddp"
    out = {}
    for n in (1, 2):
        run_stage(tiny_dataset, prompt_run, base / f"intra{n}", n, "intra")
        run_stage(
            tiny_dataset,
            prompt_run,
            base / f"inter{n}",
            n,
            "inter-epoch",
            "--epoch",
            "4",
            "--previous",
            str(base / f"intra{n}" / "checkpoint.pt"),
        )
        out[n] = base
    return {"base": base}


def test_two_processes_track_one(runs: dict) -> None:
    base = runs["base"]
    one = pd.read_parquet(base / "intra1" / "log.parquet")
    two = pd.read_parquet(base / "intra2" / "log.parquet")
    assert len(one) == len(two) == 18  # 3 epochs x 6 steps, logged once (rank 0)
    # Step 0: same weights and the same global batch; only per-rank BatchNorm statistics and
    # augmentation draws differ. Measured on this 16-image batch with fixed weights: BatchNorm
    # over the interleaved halves moves every term by under 2%; three augmentation seeds move
    # loss_intra1 by 3% and loss_i2tce by 10% either side, so only L_intra1 is held at step 0.
    first = abs(one["loss_intra1"][0] - two["loss_intra1"][0]) / one["loss_intra1"][0]
    assert first < 0.1, (one["loss_intra1"][0], two["loss_intra1"][0])
    for term in ("loss_intra1", "loss_i2tce"):
        # Later steps drift apart like two seeds do; the run's mean loss stays close.
        assert abs(one[term].mean() - two[term].mean()) / one[term].mean() < 0.25, term


def test_only_rank_zero_writes_and_memories_keep_their_layout(runs: dict) -> None:
    base = runs["base"]
    checkpoint = load_checkpoint(base / "intra2" / "checkpoint.pt")
    assert len(checkpoint["rng_per_rank"]) == 2  # both ranks' RNG states for an exact resume
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    assert (base / "inter2" / "graph.parquet").is_file()
    metrics = json.loads((base / "inter2" / "metrics.json").read_text())
    assert metrics["epoch"] == 4
    single = load_checkpoint(base / "intra1" / "checkpoint.pt")
    assert single["memories"].keys() == checkpoint["memories"].keys()
    for key, value in checkpoint["memories"].items():
        if value.dtype.is_floating_point:  # the models drift apart like two seeds; rows stay unit
            norms = value.norm(dim=1)
            assert torch.isfinite(value).all() and torch.allclose(norms, torch.ones_like(norms)), (
                key
            )
        else:  # labels and slots: the same layout in both runs
            assert torch.equal(value, single["memories"][key]), key
