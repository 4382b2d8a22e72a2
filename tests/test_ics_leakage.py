"""The ICS rule: no training stage opens the truth table, and the training table holds no
cross-camera id.

train_truth.parquet (path -> person id) sits in the same folder as train.parquet, which every
training stage reads; only diagnostics may open it. Here the stages run in-process while every
way of opening that file is refused: Python-level opens (builtins/io/os.open, Path.open,
torch.load, PIL, ...) through an audit hook, and the Parquet readers of pandas and pyarrow
(whose C++ file access bypasses Python's open) by patching them. A first test proves that the
guard does catch a read, so the others can fail.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.dataset
import pyarrow.parquet
import pytest
from conftest import tiny_config

from ccafl.data.ics import TRAIN_COLUMNS
from ccafl.settings import Settings

TRUTH = "train_truth.parquet"
_ARMED = {"on": False}


class TruthTableOpened(BaseException):
    """A BaseException, so that no ``except Exception`` in the code under test can swallow it."""


def _names_truth(source: object) -> bool:
    if isinstance(source, list | tuple):
        return any(_names_truth(s) for s in source)
    if isinstance(source, str | bytes | os.PathLike):
        return Path(os.fsdecode(source)).name == TRUTH
    name = getattr(source, "name", None)  # an open file object
    return isinstance(name, str | bytes) and _names_truth(name)


def _audit(event: str, args: tuple) -> None:
    if _ARMED["on"] and event == "open" and args and _names_truth(args[0]):
        raise TruthTableOpened(f"ICS leak: a training stage opened {args[0]} (the truth table)")


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only acts while armed


@contextlib.contextmanager
def refuse_truth_table() -> Iterator[None]:
    """Any read of a file named train_truth.parquet raises TruthTableOpened."""

    def guard(function, what: str):
        @functools.wraps(function)
        def guarded(source, *args, **kwargs):
            if _ARMED["on"] and _names_truth(source):
                raise TruthTableOpened(f"ICS leak: a training stage read {source} via {what}")
            return function(source, *args, **kwargs)

        return guarded

    readers = [
        (pd, "read_parquet"),
        (pyarrow.parquet, "read_table"),
        (pyarrow.parquet, "ParquetFile"),
        (pyarrow.parquet, "ParquetDataset"),
        (pyarrow.parquet, "read_pandas"),
        (pyarrow.dataset, "dataset"),
    ]
    with pytest.MonkeyPatch.context() as patch:
        for module, name in readers:
            patch.setattr(module, name, guard(getattr(module, name), f"{module.__name__}.{name}"))
        _ARMED["on"] = True
        try:
            yield
        finally:
            _ARMED["on"] = False


def test_the_guard_catches_every_kind_of_read(tiny_dataset: dict, intra_run: dict) -> None:
    """Without this, the leak tests below could not fail."""
    from ccafl.association.diagnostics import truth_per_gid

    truth = tiny_dataset["ics"] / TRUTH
    reads = {
        "pandas": lambda: pd.read_parquet(truth),
        "pyarrow": lambda: pyarrow.parquet.read_table(str(truth)),
        "pyarrow dataset": lambda: pyarrow.dataset.dataset(truth).to_table(),
        "open": lambda: open(truth, "rb").close(),  # noqa: SIM115
        "Path.read_bytes": truth.read_bytes,
        "diagnostics": lambda: truth_per_gid(intra_run["data"].train, truth),
    }
    for what, read in reads.items():
        with refuse_truth_table(), pytest.raises(TruthTableOpened):
            read()
            pytest.fail(f"the guard did not catch a read of the truth table by {what}")
    assert len(pd.read_parquet(truth)) > 0  # disarmed afterwards


def test_no_training_stage_opens_the_truth_table(
    tiny_dataset: dict, prompt_run: dict, tmp_path: Path
) -> None:
    from ccafl.cli import main
    from ccafl.training.inter import run_inter_epochs
    from ccafl.training.intra import run_intra
    from ccafl.training.prompt import run_prompt
    from ccafl.training.state import TrainingData

    ics, root, clip = tiny_dataset["ics"], tiny_dataset["root"], tiny_dataset["clip"]
    assert (ics / TRUTH).is_file()  # next to train.parquet, where a leak would find it
    config = tiny_config(
        root,
        prompt={"epochs": 1},
        train={"intra_epochs": 1, "epochs": 3, "adv_start": 3, "iters_per_epoch": 1},
    )

    def stage(name: str, run):
        try:
            return run()
        except TruthTableOpened as leak:
            raise AssertionError(f"{name}: {leak}") from None

    with refuse_truth_table():
        stage(
            "stage 1 (prompt)",
            lambda: run_prompt(Settings.from_config(config), root, ics, clip, tmp_path / "p"),
        )
        data = stage(
            "loading the training data", lambda: TrainingData.load(root, ics, tmp_path / "p")
        )
        stage(
            "stage 2 (intra)",
            lambda: run_intra(Settings.from_config(config), data, clip, tmp_path / "intra"),
        )
        first = tmp_path / "intra" / "checkpoint.pt"
        stage(
            "stage 3, epoch 2",
            lambda: run_inter_epochs(
                Settings.from_config(config), data, first, clip, [2], [tmp_path / "e2"]
            ),
        )
        second = tmp_path / "e2" / "checkpoint.pt"
        stage(
            "stage 3, epoch 3 (with ICAL)",
            lambda: run_inter_epochs(
                Settings.from_config(config), data, second, clip, [3], [tmp_path / "e3"]
            ),
        )
        final = ["final", "--checkpoint", str(tmp_path / "e3" / "checkpoint.pt")]
        stage("final", lambda: main([*final, "--out", str(tmp_path / "final" / "model.pt")]))
    assert (tmp_path / "final" / "model.pt").is_file()


def test_training_table_holds_no_cross_camera_id(tiny_dataset: dict) -> None:
    train = pd.read_parquet(tiny_dataset["ics"] / "train.parquet")
    extra = set(train.columns) - set(TRAIN_COLUMNS)
    assert not extra and list(train.columns) == TRAIN_COLUMNS, (
        f"ics/train.parquet has column(s) {sorted(extra)} beyond the ICS contract "
        f"{TRAIN_COLUMNS}: the training table may carry a cross-camera id"
    )
    # Whatever a column is called: none may give a person's images in different cameras the
    # same value (the test, unlike training, may read the truth).
    truth = pd.read_parquet(tiny_dataset["ics"] / TRUTH)
    table = train.merge(truth, on="path", validate="one_to_one")
    pairs = table.merge(table, on="pid", suffixes=("_a", "_b"))
    pairs = pairs[pairs["camera_a"] != pairs["camera_b"]]
    assert len(pairs) > 0  # the tiny world has people seen by several cameras
    for column in train.columns:
        linked = (pairs[f"{column}_a"] == pairs[f"{column}_b"]).mean()
        assert linked < 0.5, (
            f"ics/train.parquet column {column!r} has the same value for {linked:.0%} of the "
            "cross-camera image pairs of one person: a cross-camera id in the training table"
        )


def test_the_unsupervised_mode_reads_neither_label(tiny_dataset: dict, tmp_path: Path) -> None:
    """Stage A, then stages 1-3 on its clusters, from a training table that holds only paths
    and cameras (no per-camera label to read), with the truth table beside it refused."""
    import json
    import shutil

    from ccafl.cli import main
    from ccafl.training.inter import run_inter_epochs
    from ccafl.training.intra import run_intra
    from ccafl.training.local import IMAGE_COLUMNS
    from ccafl.training.prompt import run_prompt
    from ccafl.training.state import TrainingData

    root, clip = tiny_dataset["root"], tiny_dataset["clip"]
    label_free = tmp_path / "label_free"
    label_free.mkdir()
    images = pd.read_parquet(tiny_dataset["ics"] / "train.parquet")[IMAGE_COLUMNS]
    images.to_parquet(label_free / "train.parquet")
    shutil.copy(tiny_dataset["ics"] / TRUTH, label_free / TRUTH)  # where a leak would look
    config = tiny_config(
        root,
        prompt={"epochs": 1},
        train={"intra_epochs": 1, "epochs": 2, "adv_start": 2, "iters_per_epoch": 1,
               "camera_labels": "clusters"},
        clusters={"epochs": 1},
    )  # fmt: skip
    settings = Settings.from_config(config)
    local = tmp_path / "clusters"
    with refuse_truth_table():
        try:
            main(["local-clusters", "--set", json.dumps(config), "--ics-dir", str(label_free),
                  "--clip", str(clip), "--out-dir", str(local)])  # fmt: skip
            run_prompt(settings, root, local, clip, tmp_path / "p")
            data = TrainingData.load(root, local, tmp_path / "p")
            run_intra(settings, data, clip, tmp_path / "intra")
            first = tmp_path / "intra" / "checkpoint.pt"
            run_inter_epochs(settings, data, first, clip, [2], [tmp_path / "e2"])
            # CALR's stage B: stage 3 on refined image clusters.
            calr = Settings.from_config(
                {**config, "train": {**config["train"], "labels": "refined",
                                     "losses": {"intra2": True, "i2tce": True, "ical": False}}}
            )  # fmt: skip
            run_inter_epochs(calr, data, first, clip, [2], [tmp_path / "b2"])
        except TruthTableOpened as leak:
            raise AssertionError(f"the unsupervised mode: {leak}") from None
    train = pd.read_parquet(local / "train.parquet")
    assert list(train.columns) == TRAIN_COLUMNS
    assert (train.groupby("gid")["camera"].nunique() == 1).all()  # a cluster is one camera's
    assert (tmp_path / "e2" / "checkpoint.pt").is_file()
    labels = pd.read_parquet(tmp_path / "b2" / "labels.parquet")
    assert {"global_cluster", "local_cluster", "cluster"} <= set(labels.columns)
