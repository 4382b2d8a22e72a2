"""The retrieval-feature choice, BN-neck calibration, the image cache and its tensor
augmentation, per-camera stage-2 losses, epoch blocks and the supervised reference labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from ccafl.data import transforms
from ccafl.data.images import decode_images
from ccafl.data.transforms import normalize_uint8, tensor_train_transform
from ccafl.models.backbone import RETRIEVAL_FEATURES, ReIDEncoder, create_clip


@pytest.fixture(scope="module")
def tiny_visual():
    torch.manual_seed(0)
    return create_clip("ccafl-tiny-rn", None, (64, 32)).visual


@pytest.mark.parametrize("feature", RETRIEVAL_FEATURES)
def test_feature_choice_sets_f(tiny_visual, feature: str) -> None:
    encoder = ReIDEncoder(tiny_visual, feature).eval()
    expected = {"pooled": 512, "projection": 64, "concat": 576}[feature]
    assert encoder.feat_dim == expected
    images = torch.randn(3, 3, 64, 32)
    f, p = encoder(images)
    assert f.shape == (3, expected) and p.shape == (3, 64)
    pooled, proj = encoder.pooled(images)
    assert torch.equal(p, proj)
    # A fresh neck in eval mode is (nearly) the identity, so f is the chosen raw output.
    raw = {"pooled": pooled, "projection": proj, "concat": torch.cat([pooled, proj], 1)}[feature]
    assert torch.allclose(f, raw, atol=1e-4, rtol=1e-4)
    necks = [name for name in encoder.state_dict() if name.startswith("bottleneck")]
    if feature != "projection":
        assert "bottleneck.running_mean" in necks
    if feature != "pooled":
        assert "bottleneck_proj.running_mean" in necks


def test_unknown_feature_is_an_error(tiny_visual) -> None:
    with pytest.raises(ValueError, match="retrieval feature"):
        ReIDEncoder(tiny_visual, "cls")


def test_calibrated_necks_standardise_the_calibration_data(tiny_visual) -> None:
    encoder = ReIDEncoder(tiny_visual, "concat").eval()
    generator = torch.Generator().manual_seed(0)
    pooled = 3 * torch.randn(200, 512, generator=generator) + 1
    proj = 0.5 * torch.randn(200, 64, generator=generator) - 2
    with torch.no_grad():
        encoder.calibrate_necks(pooled, proj)
        f = encoder.head(pooled, proj)
    assert torch.allclose(f.mean(dim=0), torch.zeros(576), atol=1e-4)
    assert torch.allclose(f.std(dim=0), torch.ones(576), atol=1e-3)
    fresh = ReIDEncoder(tiny_visual, "concat").eval()
    with torch.no_grad():  # a fresh neck leaves the scales as they are
        assert fresh.head(pooled, proj)[:, :512].std() > 2.5


def _write_images(root: Path, n: int, size: tuple[int, int]) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        rel = f"img_{i}.jpg"
        pixels = rng.integers(0, 255, (size[0] + 7, size[1] + 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel, quality=90)
        paths.append(rel)
    return paths


def test_cached_images_equal_the_file_pipeline(tmp_path: Path) -> None:
    """decode_images + normalize_uint8 gives what test_transform gives per file."""
    paths = _write_images(tmp_path, 5, (64, 32))
    cached = normalize_uint8(decode_images(tmp_path, paths, (64, 32), threads=2))
    transform = transforms.test_transform(64, 32)
    for i, rel in enumerate(paths):
        with Image.open(tmp_path / rel) as image:
            expected = transform(image.convert("RGB"))
        assert torch.allclose(cached[i], expected, atol=1e-6), rel


def test_tensor_augmentation_is_seeded_and_keeps_shape(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, 8, (64, 32))
    images = decode_images(tmp_path, paths, (64, 32))
    augment = tensor_train_transform(64, 32)
    torch.manual_seed(5)
    first = augment(images)
    torch.manual_seed(5)
    again = augment(images)
    assert first.shape == (8, 3, 64, 32) and torch.equal(first, again)
    assert not torch.equal(first, normalize_uint8(images))  # something was augmented
    torch.manual_seed(6)
    assert not torch.equal(augment(images), first)


def test_stage2_losses_stay_inside_each_images_camera(tiny_dataset: dict, prompt_run: dict):
    """Mixed-camera batches: each image is scored against its own camera only; a one-camera
    batch gives the plain batch means."""
    from ccafl.memory import IntraCameraMemories
    from ccafl.settings import Settings
    from ccafl.training.intra import per_camera_losses
    from ccafl.training.schedule import active_losses
    from ccafl.training.state import TrainingData

    config = tiny_config(tiny_dataset["root"])
    data = TrainingData.load(tiny_dataset["root"], tiny_dataset["ics"], prompt_run["dir"])
    torch.manual_seed(0)
    n = len(data.train)
    features = torch.randn(n, 8)
    cameras = torch.as_tensor(data.cameras)
    intra = torch.as_tensor(data.train["intra_id"].to_numpy())
    memories = IntraCameraMemories.from_features(features, cameras, intra)
    train = Settings.from_config(config).train
    active = active_losses(1, train)
    gids = torch.as_tensor(data.gids)
    text_dim = data.text_features.shape[1]

    def terms(index: torch.Tensor, f: torch.Tensor, p: torch.Tensor) -> dict:
        return per_camera_losses(
            f, p, cameras[index], intra[index], gids[index], memories, data, train, active
        )

    index = torch.arange(0, n, max(1, n // 12))
    f = torch.randn(len(index), 8)
    p = torch.randn(len(index), text_dim)
    mixed = terms(index, f, p)
    assert len(torch.unique(cameras[index])) > 1
    for name, value in mixed.items():  # the mixed batch is the size-weighted mean per camera
        total = sum(
            terms(index[rows], f[rows], p[rows])[name] * int(rows.sum())
            for rows in (cameras[index] == c for c in torch.unique(cameras[index]))
        )
        assert torch.allclose(value, total / len(index), atol=1e-5), name
    # Another camera's memories never enter an image's loss.
    camera = int(cameras[index[0]])
    rows = cameras[index] == camera
    before = terms(index[rows], f[rows], p[rows])
    for other in range(len(memories)):
        if other != camera:
            memories[other].centroids.normal_()
            memories[other].instances.normal_()
    after = terms(index[rows], f[rows], p[rows])
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_supervised_labels_come_from_the_truth_table(tiny_dataset: dict) -> None:
    from ccafl.association.diagnostics import supervised_labels

    train = pd.read_parquet(tiny_dataset["ics"] / "train.parquet")
    truth = pd.read_parquet(tiny_dataset["ics"] / "train_truth.parquet")
    table = supervised_labels(train, tiny_dataset["ics"] / "train_truth.parquet")
    assert table["gid"].tolist() == list(range(int(train["gid"].max()) + 1))
    pid_of_gid = train.merge(truth, on="path").drop_duplicates("gid").set_index("gid")["pid"]
    same_label = table["cluster"].to_numpy()[:, None] == table["cluster"].to_numpy()[None, :]
    same_pid = pid_of_gid.to_numpy()[:, None] == pid_of_gid.to_numpy()[None, :]
    assert np.array_equal(same_label, same_pid)
    assert table["cluster"].nunique() < len(table)  # people seen by several cameras merge


def test_evaluation_before_the_neck_and_by_euclidean_distance(
    tiny_dataset: dict, tmp_path: Path
) -> None:
    """eval.neck: before evaluates the parts of f as they enter the BN-necks (CLIP-FGDI's
    cat[x12, proj] for train.feature: concat), eval.distance: euclidean ranks them unnormalised;
    metrics.json records both, and the default is the retrieval feature behind the necks."""
    from ccafl.models.factory import build_reid_model
    from ccafl.retrieval import evaluate_model
    from ccafl.settings import Settings

    def run(out: Path, **evaluation):
        config = tiny_config(
            tiny_dataset["root"], clip={"pretrained": None}, train={"feature": "concat"}
        )
        settings = Settings.from_config(config)
        torch.manual_seed(0)
        model = build_reid_model(settings, weights=False).eval()
        for neck in model.necks():  # necks that change the features
            neck.running_mean.normal_(0, 0.1)
            neck.running_var.uniform_(0.5, 2.0)
        metrics = evaluate_model(
            model, settings, tiny_dataset["root"], tiny_dataset["ics"], out, **evaluation
        )
        table = pd.read_parquet(out / "features.parquet")
        return metrics, model, np.stack(table["feature"].to_numpy()), table

    after, model, f_after, table = run(tmp_path / "after")
    before, _, f_before, _ = run(tmp_path / "before", neck="before", distance="euclidean")
    assert (after["neck"], after["distance"]) == ("after", "cosine")
    assert (before["neck"], before["distance"]) == ("before", "euclidean")
    from ccafl.data.images import ImageTable
    from ccafl.data.transforms import test_transform as eval_transform

    first = ImageTable(tiny_dataset["root"], table["path"][:4].tolist(), eval_transform(64, 32))
    images = torch.stack([first[i][0] for i in range(4)])
    with torch.no_grad():
        pooled, proj = model.pooled(images)
        np.testing.assert_allclose(f_before[:4], torch.cat([pooled, proj], 1).numpy(), atol=1e-5)
        np.testing.assert_allclose(f_after[:4], model.head(pooled, proj).numpy(), atol=1e-5)
    assert not np.allclose(f_before, f_after, atol=1e-2)
