"""Stage 1's frozen-encoder feature cache is an optimisation only: with and without it the
learned prompt tokens, text features and losses are the same (README: "identical result")."""

from __future__ import annotations

import pandas as pd
import torch
from conftest import tiny_config

from ccafl.settings import Settings


def test_feature_cache_on_and_off_learn_the_same_tokens(tiny_dataset: dict) -> None:
    from ccafl.training.prompt import train_prompts

    config = tiny_config(tiny_dataset["root"], prompt={"epochs": 3})
    train = pd.read_parquet(tiny_dataset["ics"] / "train.parquet")
    runs = {
        cached: train_prompts(
            Settings.from_config(config),
            tiny_dataset["root"],
            train,
            tiny_dataset["clip"],
            use_cache=cached,
            progress=False,
        )
        for cached in (True, False)
    }
    with_cache, without = runs[True], runs[False]
    losses = {k: r["log"].frame()["loss_prompt"].to_numpy().copy() for k, r in runs.items()}
    assert len(losses[True]) >= 6  # several steps, so a misaligned cache shows in the tokens
    # Not bit for bit: a convolution over a batch of 32 cached images and over a training
    # batch of other images round differently (seen: 4e-6 in the text features). A cache that
    # is misaligned with its labels moves the tokens by orders of magnitude more.
    tokens = with_cache["learner"].state_dict(), without["learner"].state_dict()
    assert tokens[0].keys() == tokens[1].keys()
    for key in tokens[0]:
        gap = float((tokens[0][key] - tokens[1][key]).abs().max())
        assert gap <= 1e-5, (
            f"stage 1 learns other prompt tokens with the feature cache than without "
            f"({key}: max |diff| {gap:.3g}): the cached image features are not the ones the "
            "batch would compute (wrong order, feature or transform)"
        )
    torch.testing.assert_close(
        with_cache["text_features"],
        without["text_features"],
        rtol=1e-4,
        atol=1e-5,
        msg=lambda m: f"text features differ with and without the stage-1 cache: {m}",
    )
    torch.testing.assert_close(
        torch.as_tensor(losses[True]),
        torch.as_tensor(losses[False]),
        rtol=1e-5,
        atol=1e-6,
        msg=lambda m: f"stage-1 losses differ with and without the feature cache: {m}",
    )
