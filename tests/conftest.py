"""Small dataset trees that follow the real namings, built per test in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccafl.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# Market-1501 training identities: pid -> cameras it appears in (two frames each).
MARKET_TRAIN = {2: [1, 2], 7: [1, 3], 9: [2], 11: [1, 2, 3]}


def build_market_tree(root: Path, layout: str = "market1501") -> Path:
    def name(pid: int, cam: int, frame: int) -> str:
        if layout == "market1501":
            return f"{pid:04d}_c{cam}s1_{frame:06d}_0{frame % 3}.jpg"
        return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"

    seed = 0
    for pid, cams in MARKET_TRAIN.items():
        for cam in cams:
            for frame in (100 + pid, 200 + pid):
                seed += 1
                write_image(root / "bounding_box_train" / name(pid, cam, frame), seed)
    # Test identities 20 and 21; query one image per camera; gallery with junk + distractor.
    for pid, cam, frame in [(20, 1, 1), (21, 2, 2)]:
        write_image(root / "query" / name(pid, cam, frame), frame)
    gallery = [(20, 2, 3), (20, 1, 4), (21, 1, 5), (21, 3, 6), (0, 1, 7)]
    for pid, cam, frame in gallery:
        write_image(root / "bounding_box_test" / name(pid, cam, frame), frame)
    junk = "-1_c1s1_000008_00.jpg" if layout == "market1501" else "-1_c1_f0000008.jpg"
    write_image(root / "bounding_box_test" / junk, 8)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")  # as in Market
    return root


def build_msmt_tree(root: Path, train_dir: str = "train", test_dir: str = "test") -> Path:
    def entry(folder: str, pid: int, idx: int, cam: int) -> str:
        rel = f"{pid:04d}/{pid:04d}_{idx:03d}_{cam:02d}_0303morning_{idx:04d}_0.jpg"
        write_image(root / folder / rel, pid * 100 + idx)
        return f"{rel} {pid}"

    train = [entry(train_dir, 0, 0, 1), entry(train_dir, 0, 1, 2), entry(train_dir, 1, 2, 1)]
    val = [entry(train_dir, 2, 3, 2), entry(train_dir, 2, 4, 3)]
    query = [entry(test_dir, 0, 0, 4)]
    gallery = [entry(test_dir, 0, 1, 5), entry(test_dir, 1, 2, 4)]
    for name, lines in [
        ("list_train.txt", train),
        ("list_val.txt", val),
        ("list_query.txt", query),
        ("list_gallery.txt", gallery),
    ]:
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def build_custom_tree(root: Path, fmt: str = "csv") -> Path:
    import pandas as pd

    train_rows = []
    for cam, labels in [("entrance", ["a", "b", "c"]), ("hall", ["x", "y"])]:
        for label in labels:
            for k in range(2):
                rel = f"imgs/{cam}_{label}_{k}.png"
                write_image(root / rel, len(train_rows))
                train_rows.append({"path": rel, "camera": cam, "intra_id": label})
    test_rows = []
    # Query and gallery share each person across cameras, so the split is evaluable.
    for i, (cam, pid) in enumerate([("entrance", 5), ("hall", 6), ("hall", 5), ("entrance", 6)]):
        rel = f"test/{i}.png"
        write_image(root / rel, 100 + i)
        test_rows.append({"path": rel, "camera": cam, "pid": pid})
    tables = {
        "train": pd.DataFrame(train_rows),
        "query": pd.DataFrame(test_rows[:2]),
        "gallery": pd.DataFrame(test_rows[2:]),
    }
    for split, table in tables.items():
        if fmt == "csv":
            table.to_csv(root / f"{split}.csv", index=False)
        else:
            table.to_parquet(root / f"{split}.parquet", index=False)
    return root


@pytest.fixture
def market_tree(tmp_path: Path) -> Path:
    return build_market_tree(tmp_path / "market")


TINY_SYNTHETIC = {
    "seed": 3,
    "n_cameras": 3,
    "n_train_ids": 16,
    "n_test_ids": 10,
    "n_pretrain_ids": 120,
    "cameras_per_id": [2, 3],
    "frames_per_camera": [2, 3],
    "n_distractors": 4,
    "n_junk": 2,
}


def snakemake_dry_run(
    workdir: Path,
    *args: str,
    target: str = "all",
    configfile: Path = REPO / "config" / "config.yaml",
    check: bool = True,
    timeout: int = 300,
) -> str:
    """The plan `snakemake <target> -n -p` prints for this repository's workflow run in
    ``workdir`` (stdout and stderr together); ``check``: a non-zero exit fails the test."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            target,
            "-n",
            "-p",
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(configfile),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, out[-3000:]
    return out


class RecordingBatches:
    """A stage's epoch loader wrapped so that ``on_batch(images, index)`` sees every batch
    before training does (the spies of the stage-2 and stage-3 tests)."""

    def __init__(self, batches, on_batch) -> None:
        self.batches = batches
        self.on_batch = on_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for images, index in self.batches:
            self.on_batch(images, index)
            yield images, index


def tiny_config(root: Path, **sections: dict) -> dict:
    """A validated config for a tiny synthetic run with a random-init tiny CLIP."""
    from ccafl.config import deep_merge, validate

    base = {
        "dataset": {"name": "tiny", "format": "synthetic", "root": str(root)},
        "synthetic": TINY_SYNTHETIC,
        "input": {"height": 64, "width": 32},
        "clip": {"model": "ccafl-tiny-rn", "pretrained": "captions"},
        "clip_pretrain": {"epochs": 2, "batch_size": 32},
        "prompt": {"epochs": 40, "batch_size": 32, "lr": 3.5e-3},
        "train": {
            "epochs": 4,
            "intra_epochs": 2,
            "adv_start": 4,
            "warmup_epochs": 1,
            "P": 4,
            "K": 4,
            "iters_per_epoch": 4,
            "num_workers": 0,
            "threshold": 1.5,
        },
        "eval": {"batch_size": 64},
    }
    return validate(deep_merge(base, sections))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A rendered tiny synthetic benchmark and its ICS tables, shared by the training tests."""
    from ccafl.data.ics import build_ics
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    base = tmp_path_factory.mktemp("tiny")
    root = base / "dataset"
    from ccafl.training.clip_pretrain import pretrain_clip

    synthesize(root, SyntheticSpec.from_config(TINY_SYNTHETIC), progress=False)
    build_ics(root, "synthetic", base / "ics")
    # A random CLIP maps all images to nearly one direction; a short caption pretraining
    # gives the features the spread that the stage tests need (as the pipeline does).
    config = tiny_config(
        root, clip={"pretrained": "captions"}, clip_pretrain={"epochs": 40, "lr": 3e-3}
    )
    pretrain_clip(Settings.from_config(config), root, base / "clip")
    return {
        "root": root,
        "ics": base / "ics",
        "base": base,
        "clip": base / "clip" / "pretrained.pt",
    }


@pytest.fixture(scope="session")
def prompt_run(tiny_dataset: dict) -> dict:
    from ccafl.training.prompt import run_prompt

    config = tiny_config(tiny_dataset["root"])
    out = tiny_dataset["base"] / "prompt"
    metrics = run_prompt(
        Settings.from_config(config),
        tiny_dataset["root"],
        tiny_dataset["ics"],
        tiny_dataset["clip"],
        out,
    )
    return {"config": config, "dir": out, "metrics": metrics}


@pytest.fixture(scope="session")
def intra_run(tiny_dataset: dict, prompt_run: dict) -> dict:
    """Stage 2 on the tiny set (epochs 1-2): the starting point of the stage-3 tests."""
    from ccafl.training.intra import run_intra
    from ccafl.training.state import TrainingData

    config = tiny_config(tiny_dataset["root"])
    data = TrainingData.load(tiny_dataset["root"], tiny_dataset["ics"], prompt_run["dir"])
    out = tiny_dataset["base"] / "intra"
    run_intra(Settings.from_config(config), data, tiny_dataset["clip"], out)
    return {"config": config, "data": data, "checkpoint": out / "checkpoint.pt"}
