"""Pretrained CLIP weights: the activation each source was trained with, read once, rebuilt bare.

No download happens: the "tag" model is built by open_clip's own tag path with its download
step pointed at a locally saved random-weight file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from conftest import tiny_config
from open_clip.transformer import QuickGELU

from ccafl.inference.models import load_reid_model
from ccafl.models import backbone
from ccafl.models.backbone import (
    ClipCheckpoint,
    create_clip,
    read_clip_checkpoint,
    resolve_quick_gelu,
    uses_quick_gelu,
)
from ccafl.models.factory import final_model_payload, import_clip
from ccafl.settings import Settings

TINY = "ccafl-tiny-rn"
TEXTS = ["a photo of a person.", "a man in a red coat walking", "x"]

# A ViT small enough for unit tests: in a ViT the activation also shapes the image features.
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def project_configs() -> None:
    backbone.register_model_configs()  # the tiny CLIP is built by open_clip directly below


def text_features(model: torch.nn.Module) -> torch.Tensor:
    tokens = open_clip.tokenize(TEXTS, context_length=model.context_length)
    with torch.no_grad():
        return model.eval().encode_text(tokens)


def text_activation(model: torch.nn.Module) -> type:
    return type(model.transformer.resblocks[0].mlp.gelu)


@pytest.fixture(scope="module")
def rn50_openai_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random RN50 weights saved as OpenAI-layout state dict (how a user saves them offline)."""
    torch.manual_seed(0)
    source = open_clip.create_model("RN50", pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "RN50-openai.pt"
    torch.save(source.state_dict(), path)
    return path


def test_openai_file_builds_quickgelu_and_equals_the_tag(
    rn50_openai_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def local_download(cfg, *args, **kwargs) -> str:  # the tag path, minus the network
        return str(rn50_openai_file)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", local_download)
    # A run reads a tag from open_clip's cache only: pretend the file is the cached download.
    import ccafl.models.weights as weights

    monkeypatch.setattr(weights, "cached_hub_weights", lambda model, tag: rn50_openai_file)
    tag = create_clip("RN50", "openai")
    from_file = create_clip("RN50", str(rn50_openai_file))
    assert text_activation(tag) is QuickGELU and text_activation(from_file) is QuickGELU
    assert torch.equal(text_features(from_file), text_features(tag))
    # The defect this guards against: the same weights with GELU give other text features.
    with_gelu = create_clip("RN50", str(rn50_openai_file), quick_gelu=False)
    assert text_activation(with_gelu) is torch.nn.GELU
    assert (text_features(with_gelu) - text_features(tag)).abs().max() > 1e-4


def write_torchscript_archive(path: Path) -> torch.nn.Module:
    """A traced CLIP with the extras OpenAI's archives carry; returns the traced source."""
    torch.manual_seed(1)
    source = open_clip.create_model(TINY, pretrained=None).eval()
    del source.context_length, source.vocab_size  # archive buffers in their place
    for name, value in (("input_resolution", 64), ("context_length", 32), ("vocab_size", 49408)):
        source.register_buffer(name, torch.tensor(value))
    images = torch.randn(1, 3, 64, 64)
    tokens = open_clip.tokenize(["a"], context_length=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(source, (images, tokens), check_trace=False).save(str(path))
    return source


def test_torchscript_archive_builds_quickgelu(tmp_path: Path) -> None:
    path = tmp_path / "openai-archive.pt"
    source = write_torchscript_archive(path)
    assert read_clip_checkpoint(path).kind == "torchscript"
    from_archive = create_clip(TINY, str(path))
    assert text_activation(from_archive) is QuickGELU
    reference = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True)
    state = {k: v for k, v in source.state_dict().items() if k in reference.state_dict()}
    reference.load_state_dict(state)
    assert torch.equal(text_features(from_archive), text_features(reference))


@pytest.mark.parametrize(
    ("model", "kind", "name", "recorded", "config", "expected"),
    [
        ("RN50", "state_dict", "RN50.pt", None, None, True),  # every RN50 release: QuickGELU
        ("RN101", "state_dict", "open_clip_pytorch_model.bin", None, None, True),
        (TINY, "state_dict", "mine.pt", None, None, False),  # no releases: its own config
        ("ViT-B-16", "state_dict", "vit_b_16-quickgelu-metaclip.pt", None, None, True),
        ("ViT-B-16", "torchscript", "ViT-B-16.pt", None, None, True),
        ("RN50", "ccafl", "imported.pt", False, None, False),  # recorded by clip_import
        (TINY, "ccafl", "pretrained.pt", None, {"clip": {"quick_gelu": "auto"}}, False),
        (TINY, "ccafl", "pretrained.pt", None, {"clip": {"quick_gelu": True}}, True),
    ],
)
def test_activation_of_a_weight_file(model, kind, name, recorded, config, expected) -> None:
    checkpoint = ClipCheckpoint({}, kind, recorded, config)
    flag, reason = resolve_quick_gelu(model, checkpoint, Path(name))
    assert flag is expected and reason


def test_ambiguous_architecture_asks_for_the_key() -> None:
    with pytest.raises(ValueError, match="clip.quick_gelu") as err:
        resolve_quick_gelu("ViT-B-16", ClipCheckpoint({}, "state_dict"), Path("vit.pt"))
    assert "\n" not in str(err.value)


def test_open_clip_training_checkpoint_layout(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = open_clip.create_model(TINY, pretrained=None)
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": wrapped}, path)
    loaded = create_clip(TINY, str(path))
    assert text_activation(loaded) is torch.nn.GELU  # the config it was trained with
    assert torch.equal(text_features(loaded), text_features(source))
    forced = create_clip(TINY, str(path), quick_gelu=True)
    assert text_activation(forced) is QuickGELU


def test_import_records_the_activation_and_reproduces_the_source(tmp_path: Path) -> None:
    path = tmp_path / "openai-archive.pt"
    write_torchscript_archive(path)
    config = {"clip": {"model": TINY, "pretrained": str(path), "quick_gelu": "auto"}}
    summary = import_clip(Settings.from_config(config).clip, tmp_path / "imported.pt")
    assert summary["quick_gelu"] is True
    assert torch.load(tmp_path / "imported.pt", weights_only=False)["quick_gelu"] is True
    path.unlink()  # the copy stands alone
    imported = create_clip(TINY, str(tmp_path / "imported.pt"))
    assert text_activation(imported) is QuickGELU
    direct = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True)
    direct.load_state_dict(torch.load(tmp_path / "imported.pt", weights_only=False)["model"])
    assert torch.equal(text_features(imported), text_features(direct))


def test_import_refuses_what_it_cannot_import(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to import"):
        import_clip(
            Settings.from_config({"clip": {"model": TINY, "pretrained": None}}).clip,
            tmp_path / "x.pt",
        )


@pytest.fixture
def tiny_vit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A registered tiny ViT and an OpenAI-style TorchScript archive of its random weights."""
    name = "ccafl-test-vit"
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / f"{name}.json").write_text(json.dumps(TINY_VIT))
    monkeypatch.setenv(backbone.CONFIG_DIR_ENV, str(folder))
    backbone.register_model_configs()
    torch.manual_seed(3)
    source = open_clip.create_model(name, pretrained=None).eval()
    archive = tmp_path / "vit-archive.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens = open_clip.tokenize(["a"], context_length=16)
        traced = torch.jit.trace(source, (torch.randn(1, 3, 32, 32), tokens), check_trace=False)
        traced.save(str(archive))
    return name, archive


def test_bare_rebuilds_keep_the_trained_activation(tiny_vit, tmp_path: Path) -> None:
    """Stage 3 (resume), final and evaluate never read the weight file again, and a ViT gets
    back the activation it was trained with from the checkpoint alone."""
    from ccafl.training.state import TrainingState

    name, archive = tiny_vit
    config = tiny_config(tmp_path, clip={"model": name, "pretrained": str(archive)})
    state = TrainingState.create(Settings.from_config(config), None, n_gids=4)
    assert uses_quick_gelu(state.module) is True  # read from an OpenAI archive
    state.epoch = 2
    state.save(tmp_path / "checkpoint.pt")
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = state.module.eval()(images)
    archive.unlink()  # the pretrained weights are gone from here on

    resumed = TrainingState.resume(
        tmp_path / "checkpoint.pt", Settings.from_config(config), archive, n_gids=4
    )
    assert resumed.epoch == 2 and uses_quick_gelu(resumed.module) is True
    with torch.no_grad():
        got = resumed.module.eval()(images)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))

    torch.save(
        final_model_payload(resumed.module, Settings.from_config(config)), tmp_path / "model.pt"
    )
    final = load_reid_model(tmp_path / "model.pt")
    assert any(isinstance(m, QuickGELU) for m in final.modules())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(final(images), expected, strict=True))
