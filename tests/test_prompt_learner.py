"""Stage-1 prompt learner: template splicing, shapes, and where gradients go."""

from __future__ import annotations

import open_clip
import pytest
import torch

from ccafl.models.backbone import PromptTextEncoder, create_clip
from ccafl.models.prompt_learner import PromptLearner

TINY = "ccafl-tiny-rn"


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip(TINY, None, (64, 32)).eval()


@pytest.fixture(scope="module")
def text_encoder(clip):
    return PromptTextEncoder(clip)


def test_shapes_and_template_splicing(clip):
    learner = PromptLearner(clip, n_classes=7, n_tokens=5)
    labels = torch.tensor([0, 3, 6, 3])
    prompts, eot = learner(labels)
    assert prompts.shape == (4, clip.context_length, clip.token_embedding.embedding_dim)
    assert learner.ctx.shape == (7, 5, clip.token_embedding.embedding_dim)

    tokens = open_clip.tokenize(["a photo of X X X X X person."], context_length=32)[0]
    assert torch.equal(eot, torch.full((4,), int(tokens.argmax())))
    expected = clip.token_embedding(tokens).detach()
    # SOT + "a photo of" stay fixed, then the 5 learnable vectors, then "person." EOT padding.
    assert torch.equal(prompts[:, :4], expected[:4].expand(4, -1, -1))
    assert torch.equal(prompts[:, 4:9], learner.ctx[labels].detach())
    assert torch.equal(prompts[:, 9:], expected[9:].expand(4, -1, -1))


def test_context_initialisation(clip):
    torch.manual_seed(1)
    learner = PromptLearner(clip, n_classes=200, n_tokens=5)
    assert abs(learner.ctx.std().item() - 0.02) < 0.002
    assert abs(learner.ctx.mean().item()) < 0.002
    assert set(learner.state_dict()) == {"ctx"}


@pytest.mark.parametrize("n_tokens", [1, 3, 8])
def test_token_count_changes_only_the_context(clip, text_encoder, n_tokens):
    learner = PromptLearner(clip, n_classes=2, n_tokens=n_tokens)
    prompts, eot = learner(torch.tensor([1]))
    assert prompts.shape[1] == clip.context_length
    assert int(eot[0]) == 4 + n_tokens + 2  # "person" "." then EOT
    assert text_encoder(prompts, eot).shape == (1, 64)


def test_gradients_reach_only_the_batch_context(clip, text_encoder):
    learner = PromptLearner(clip, n_classes=6, n_tokens=5)
    labels = torch.tensor([1, 4, 4])
    text_encoder(*learner(labels)).pow(2).sum().backward()
    grad = learner.ctx.grad
    assert grad is not None
    rows = grad.abs().sum(dim=(1, 2))
    assert (rows[[1, 4]] > 0).all()
    assert (rows[[0, 2, 3, 5]] == 0).all()
    assert all(p.grad is None for p in clip.parameters())


def test_encode_all_matches_per_class_forward(clip, text_encoder):
    learner = PromptLearner(clip, n_classes=5)
    features = learner.encode_all(text_encoder, batch_size=2)
    assert features.shape == (5, 64) and not features.requires_grad
    with torch.no_grad():
        one = text_encoder(*learner(torch.tensor([3])))
    torch.testing.assert_close(features[3:4], one)


def test_bad_templates_are_rejected(clip):
    with pytest.raises(ValueError, match="exactly one"):
        PromptLearner(clip, 2, template="a photo of a person.")
    with pytest.raises(ValueError, match="does not fit"):
        PromptLearner(clip, 2, n_tokens=40)
