"""The typed config sections: built from a validated config, a key a stage was not given raises
KeyError naming it (the strict e2e mode relies on this), copies keep absent keys absent."""

from __future__ import annotations

import pytest

from ccafl.config import load_config
from ccafl.settings import Settings, TrainSection


def test_sections_read_the_validated_config() -> None:
    config = load_config(None, '{"train": {"lr": 0.01}, "input": {"height": 96, "width": 48}}')
    settings = Settings.from_config(config)
    assert (
        settings.train.lr == 0.01
        and settings.train.batch_size == config["train"]["P"] * config["train"]["K"]
    )
    assert settings.train.losses.ical is config["train"]["losses"]["ical"]
    assert settings.input.size == (96, 48)
    assert settings.raw == config


def test_a_key_the_stage_was_not_given_raises_naming_it() -> None:
    settings = Settings.from_config({"train": {"lr": 1.0, "losses": {"ical": True}}})
    with pytest.raises(KeyError, match=r"train\.adv_start"):
        _ = settings.train.adv_start
    with pytest.raises(KeyError, match=r"train\.losses\.intra2"):
        _ = settings.train.losses.intra2
    with pytest.raises(KeyError, match=r"clip\.model"):
        _ = settings.clip.model
    assert settings.train.get("feature", "pooled") == "pooled"  # model files older than the key


def test_replace_changes_one_key_and_keeps_absent_keys_absent() -> None:
    train = TrainSection.from_config({"lr": 1.0, "num_workers": 4})
    copy = train.replace(num_workers=0)
    assert (copy.num_workers, copy.lr, train.num_workers) == (0, 1.0, 4)
    assert not copy.has("eps")
    with pytest.raises(KeyError, match=r"train\.eps"):
        _ = copy.eps
    settings = Settings.from_config({"train": {"lr": 1.0}})
    assert settings.replace(train=copy).train.num_workers == 0
    with pytest.raises(AttributeError):
        copy.lr = 2.0  # frozen
