"""CALR's backbone: torchvision's ImageNet ResNet-50 as `clip.model: resnet50-imagenet`.

Random weights saved locally stand in for torchvision's ImageNet file (no download here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from ccafl.checks import config_problems, weights_problem
from ccafl.config import validate
from ccafl.data.transforms import CLIP_MEAN, CLIP_STD
from ccafl.errors import WeightsError
from ccafl.models.factory import build_reid_model, import_clip
from ccafl.models.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetResNet
from ccafl.settings import Settings


def _settings(**clip) -> Settings:
    config = {"clip": {"model": "resnet50-imagenet", "pretrained": None} | clip}
    config["input"] = {"height": 64, "width": 32}
    config["train"] = {"losses": {"i2tce": False}}
    return Settings.from_config(validate(config))


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision ResNet-50 state dict (with its ImageNet classifier), random weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tv") / "resnet50-0676ba61.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def _normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_clip_normalised_input_gives_torchvisions_features_on_imagenet_normalisation(
    torchvision_file: Path,
) -> None:
    """The pipeline feeds CLIP-normalised images; the network must see what torchvision's
    ResNet-50 sees on ImageNet-normalised ones (its weights were trained on those)."""
    reference = torchvision.models.resnet50(weights=None).eval()
    reference.load_state_dict(torch.load(torchvision_file, weights_only=True))
    model = build_reid_model(_settings(pretrained=str(torchvision_file))).eval()
    images = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        pooled, p = model.pooled(_normalised(images, CLIP_MEAN, CLIP_STD))
        r = reference
        x = _normalised(images, IMAGENET_MEAN, IMAGENET_STD)
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        expected = r.layer4(r.layer3(r.layer2(r.layer1(x)))).mean(dim=(2, 3))
    torch.testing.assert_close(pooled, expected, rtol=1e-3, atol=1e-4)
    assert torch.equal(p, pooled)  # no projection: p is the pooled feature
    assert model.feat_dim == 2048 and model.visual.image_size == (64, 32)


def test_last_stride_one_doubles_the_feature_map() -> None:
    images = torch.zeros(1, 3, 64, 32)
    assert ImageNetResNet(last_stride_one=False).feature_map(images).shape[2:] == (2, 1)
    assert ImageNetResNet(last_stride_one=True).feature_map(images).shape[2:] == (4, 2)


def test_the_imported_copy_rebuilds_the_same_network(
    torchvision_file: Path, tmp_path: Path
) -> None:
    settings = _settings(pretrained=str(torchvision_file))
    record = import_clip(settings.clip, tmp_path / "imported.pt")
    assert record["quick_gelu"] is None and record["parameters"] > 23_000_000
    direct = build_reid_model(settings).state_dict()
    copied = build_reid_model(settings, tmp_path / "imported.pt").state_dict()
    assert direct.keys() == copied.keys()
    assert all(torch.equal(direct[k], copied[k]) for k in direct)


def test_the_imagenet_tag_reads_torchs_hub_cache_and_never_downloads(
    torchvision_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    clip = {"model": "resnet50-imagenet", "pretrained": "imagenet"}
    problem = weights_problem(clip)
    assert problem and str(tmp_path / "torch" / "hub" / "checkpoints") in problem
    with pytest.raises(WeightsError, match="no torchvision ResNet-50 ImageNet file"):
        build_reid_model(_settings(pretrained="imagenet"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / torchvision_file.name).symlink_to(torchvision_file)
    assert weights_problem(clip) is None
    model = build_reid_model(_settings(pretrained="imagenet"))
    expected = torch.load(torchvision_file, weights_only=True)["conv1.weight"]
    assert torch.equal(model.visual.trunk.conv1.weight, expected)


def test_a_file_that_is_not_a_resnet50_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="not a torchvision ResNet-50 state dict") as error:
        build_reid_model(_settings(pretrained=str(path)))
    assert "\n" not in str(error.value)
    missing = weights_problem({"model": "resnet50-imagenet", "pretrained": str(tmp_path / "x.pth")})
    assert missing and "weights file not found" in missing


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"losses": {"i2tce": True}}}, "train.losses.i2tce: false"),
        ({"train": {"feature": "concat", "losses": {"i2tce": False}}}, "train.feature: pooled"),
        ({"clip": {"pretrained": "captions"}}, "clip.pretrained cannot be captions"),
    ],
)
def test_what_needs_a_text_tower_is_refused_before_any_job(override: dict, key: str) -> None:
    config = {"clip": {"model": "resnet50-imagenet", "pretrained": None}}
    for section, values in override.items():
        config[section] = config.get(section, {}) | values
    problems = config_problems(validate(config))
    assert any(key in p and "has no text tower" in p for p in problems), problems


def test_a_resnet50_model_file_exports_embeds_and_searches(tmp_path: Path) -> None:
    """Using a trained CALR model: the final model file of a ResNet-50 rebuilds, exports to
    TorchScript (and ONNX with the extra) with the eager features, and embeds, indexes and
    searches a Market-named tree, as a CLIP model does (tests/test_export.py, test_search.py)."""
    import json

    import pandas as pd
    from conftest import build_market_tree

    from ccafl.cli import main
    from ccafl.embedding import read_embeddings
    from ccafl.inference.models import load_reid_model
    from ccafl.io import save_torch
    from ccafl.models.factory import final_model_payload

    settings = _settings(last_stride_one=True)
    torch.manual_seed(0)
    model = build_reid_model(settings, weights=False).eval()
    model.bottleneck.running_mean.normal_(0, 0.1)  # a BN-neck that is not the identity
    model.bottleneck.running_var.uniform_(0.5, 2.0)
    save_torch(final_model_payload(model, settings, epoch=0), tmp_path / "model.pt")

    images = torch.randn(3, 3, 64, 32)
    rebuilt = load_reid_model(tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images)[0], model(images)[0])

    assert (
        main(["export", "--model", str(tmp_path / "model.pt"), "--out-dir", str(tmp_path / "x")])
        == 0
    )
    report = json.loads((tmp_path / "x" / "export.json").read_text())
    assert report["input_size"] == [64, 32]
    assert report["torchscript"]["max_abs_diff"] < 1e-5
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass  # the onnx extra is not installed: TorchScript only
    else:
        assert report["onnx"]["max_abs_diff"] < 1e-4

    root = build_market_tree(tmp_path / "market")
    features, index, out = tmp_path / "g.parquet", tmp_path / "idx", tmp_path / "res"
    args = ["--model", str(tmp_path / "model.pt")]
    assert (
        main(["embed", *args, "--images", str(root / "bounding_box_test"), "--out", str(features)])
        == 0
    )
    table = read_embeddings(features)
    assert table.metadata["feature_name"] == "pooled" and table.features.shape[1] == 2048
    assert main(["index", "--features", str(features), "--out", str(index)]) == 0
    assert main(["search", "--index", str(index), "--query", str(root / "query"), "--top-k", "3",
                 "--no-sheet", "--out", str(out)]) == 0  # fmt: skip
    assert len(pd.read_csv(out / "ranking.csv")) > 0
