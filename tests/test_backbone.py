"""CLIP backbone adaptation: shapes, re-gridding, weight sources, the embedding-fed text tower."""

from __future__ import annotations

import json

import huggingface_hub
import open_clip
import pytest
import torch

from ccafl.errors import WeightsError
from ccafl.models import backbone
from ccafl.models.backbone import (
    PromptTextEncoder,
    ReIDEncoder,
    adapt_to_image_size,
    create_clip,
    feature_grid,
    last_stride_one,
    register_model_configs,
)

TINY = "ccafl-tiny-rn"
REID_SIZE = (256, 128)


@pytest.fixture(scope="module")
def rn50():
    torch.manual_seed(0)
    return create_clip("RN50", None, REID_SIZE).eval()


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return create_clip("ViT-B-16", None, REID_SIZE).eval()


def tiny(size=(64, 32), **kwargs):
    torch.manual_seed(0)
    return create_clip(TINY, None, size, **kwargs).eval()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def test_tiny_config_is_registered():
    assert TINY in register_model_configs()
    assert TINY in open_clip.list_models()
    assert open_clip.get_tokenizer(TINY).context_length == 32


def test_env_config_dir_is_registered(tmp_path, monkeypatch):
    cfg = json.loads((backbone.config_dirs()[0] / f"{TINY}.json").read_text())
    (tmp_path / "ccafl-env-test.json").write_text(json.dumps(cfg))
    monkeypatch.setenv(backbone.CONFIG_DIR_ENV, str(tmp_path))
    assert "ccafl-env-test" in register_model_configs()
    monkeypatch.setenv(backbone.CONFIG_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        register_model_configs()


@pytest.mark.parametrize(
    ("fixture", "feat_dim", "proj_dim"), [("rn50", 2048, 1024), ("vit_b16", 768, 512)]
)
def test_reid_encoder_shapes_at_256x128(request, fixture, feat_dim, proj_dim):
    clip = request.getfixturevalue(fixture)
    encoder = ReIDEncoder(clip.visual).eval()
    assert (encoder.feat_dim, encoder.proj_dim) == (feat_dim, proj_dim)
    images = torch.randn(2, 3, *REID_SIZE)
    with torch.no_grad():
        f, p = encoder(images)
        assert f.shape == (2, feat_dim)
        assert p.shape == (2, proj_dim)
        # p is exactly CLIP's image embedding, so it lives in the text features' space.
        torch.testing.assert_close(p, clip.encode_image(images))


def test_rn50_and_vit_grids(rn50, vit_b16):
    assert feature_grid(rn50.visual, REID_SIZE) == (8, 4)
    assert rn50.visual.attnpool.positional_embedding.shape == (8 * 4 + 1, 2048)
    assert tuple(vit_b16.visual.grid_size) == (16, 8)
    assert vit_b16.visual.positional_embedding.shape == (16 * 8 + 1, 768)
    assert tuple(vit_b16.visual.image_size) == REID_SIZE


def test_tiny_encoder_trains_at_64x32():
    clip = tiny()
    encoder = ReIDEncoder(clip).train()
    assert (encoder.feat_dim, encoder.proj_dim) == (512, 64)
    f, p = encoder(torch.randn(4, 3, 64, 32))
    assert f.shape == (4, 512) and p.shape == (4, 64)
    (f.sum() + p.sum()).backward()
    assert encoder.bottleneck.bias.grad is None  # BN-neck bias stays frozen
    assert encoder.bottleneck.weight.grad is not None
    assert clip.visual.conv1.weight.grad is not None


@pytest.mark.parametrize("fixture", ["rn50", "vit_b16"])
def test_same_grid_leaves_big_models_identical(request, fixture):
    clip = request.getfixturevalue(fixture)
    before = snapshot(clip)
    param = clip.visual.state_dict(keep_vars=True)
    adapt_to_image_size(clip, REID_SIZE)
    assert_same_state(before, clip.state_dict())
    after = clip.visual.state_dict(keep_vars=True)
    assert all(param[k] is after[k] for k in param)  # not even re-created


@pytest.mark.parametrize("size", [(64, 64), (70, 70), (64, 32)])
def test_same_grid_is_bit_identical(size):
    clip = create_clip(TINY, None, None).eval()  # native 64x64, grid 2x2
    if size == (64, 32):
        adapt_to_image_size(clip, size)
        size = (70, 40)  # same 2x1 grid as 64x32
    images = torch.randn(3, 3, *size)
    before, out = snapshot(clip), clip.encode_image(images)
    adapt_to_image_size(clip, size)
    assert_same_state(before, clip.state_dict())
    assert torch.equal(clip.encode_image(images), out)


def test_regrid_keeps_cls_row_and_constant_grid():
    clip = create_clip(TINY, None, None)
    pool = clip.visual.attnpool
    with torch.no_grad():
        pool.positional_embedding[1:] = 0.5
    cls_row = pool.positional_embedding[0].clone()
    adapt_to_image_size(clip, (128, 64))
    assert pool.positional_embedding.shape == (4 * 2 + 1, 512)
    assert torch.equal(pool.positional_embedding[0], cls_row)
    torch.testing.assert_close(pool.positional_embedding[1:], torch.full((8, 512), 0.5))
    assert pool.positional_embedding.requires_grad


def test_last_stride_one_doubles_grid():
    clip = tiny()
    images = torch.randn(2, 3, 64, 32)
    visual = clip.visual
    assert feature_grid(visual, (64, 32)) == (2, 1)
    last_stride_one(clip, (64, 32))
    assert feature_grid(visual, (64, 32)) == (4, 2)
    assert visual.attnpool.positional_embedding.shape == (4 * 2 + 1, 512)
    with torch.no_grad():
        fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        assert fmap.shape[-2:] == (4, 2)
        f, p = ReIDEncoder(visual).eval()(images)
    assert f.shape == (2, 512) and p.shape == (2, 64)
    via_create = tiny(last_stride=1)
    assert feature_grid(via_create.visual, (64, 32)) == (4, 2)


def test_last_stride_one_rejects_vit(vit_b16):
    with pytest.raises(TypeError, match="ModifiedResNet"):
        last_stride_one(vit_b16)


def test_unknown_model_lists_available_names():
    with pytest.raises(ValueError, match="unknown CLIP model") as err:
        create_clip("RN51-nope", None, (64, 32))
    assert "RN50" in str(err.value) and TINY in str(err.value)


def test_missing_local_checkpoint_names_path(tmp_path):
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_clip(TINY, str(missing), (64, 32))


def test_captions_must_be_resolved_by_caller():
    with pytest.raises(ValueError, match="clip_pretrain"):
        create_clip(TINY, "captions", (64, 32))


def test_uncached_hub_tag_fails_at_once_without_network(monkeypatch, tmp_path):
    def network(*args, **kwargs):
        raise AssertionError("a run must never download weights")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty
    monkeypatch.setattr(open_clip, "create_model", network)
    with pytest.raises(WeightsError, match="fetch-weights --model RN50 --pretrained openai"):
        create_clip("RN50", "openai", REID_SIZE)


@pytest.mark.parametrize("layout", ["ours", "plain", "ddp", "adapted"])
def test_local_checkpoint_roundtrip(tmp_path, layout):
    source = create_clip(TINY, None, (64, 32) if layout == "adapted" else None)
    with torch.no_grad():
        source.visual.attnpool.positional_embedding.normal_()
    state = source.state_dict()
    if layout == "ours":
        payload = {"model": state, "config": {"model": TINY}, "versions": {"torch": "x"}}
    elif layout == "ddp":
        payload = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    else:
        payload = state
    path = tmp_path / "clip.pt"
    torch.save(payload, path)

    loaded = create_clip(TINY, str(path), (64, 32))
    reference = source if layout == "adapted" else adapt_to_image_size(source, (64, 32))
    assert_same_state(reference.state_dict(), loaded.state_dict())


def test_checkpoint_of_other_architecture_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"logit_scale": torch.tensor(1.0)}}, path)
    with pytest.raises(RuntimeError, match="does not fit"):
        create_clip(TINY, str(path), (64, 32))


@pytest.mark.parametrize("fixture", ["tiny", "rn50", "vit_b16"])
def test_prompt_text_encoder_matches_encode_text(request, fixture):
    clip = tiny() if fixture == "tiny" else request.getfixturevalue(fixture)
    encoder = PromptTextEncoder(clip)
    tokens = open_clip.tokenize(
        ["a photo of a person.", "a man in a red coat walking", "x"],
        context_length=clip.context_length,
    )
    with torch.no_grad():
        ours = encoder(clip.token_embedding(tokens), tokens.argmax(dim=-1))
        theirs = clip.encode_text(tokens)
    assert ours.shape == (3, clip.text_projection.shape[1])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_prompt_text_encoder_is_frozen_but_passes_gradients():
    clip = tiny()
    encoder = PromptTextEncoder(clip)
    assert not any(p.requires_grad for p in encoder.parameters())
    tokens = open_clip.tokenize(["a photo of a person."], context_length=clip.context_length)
    embeddings = clip.token_embedding(tokens).detach().requires_grad_(True)
    encoder(embeddings, tokens.argmax(dim=-1)).sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context length"):
        encoder(embeddings[:, :10], tokens.argmax(dim=-1))
