"""The config keys a rule passes its stage (issue 12): picked by `select_keys`, and, under
CCAFL_STRICT_CONFIG=1 (the end-to-end tests), the only keys the stage can read."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from ccafl.config import restrict_to, select_keys, validate


def test_select_keys_takes_sections_single_keys_and_nested_keys() -> None:
    config = validate({"train": {"lam": 0.6}})
    picked = select_keys(config, ("input", "train.lam", "train.losses.ical", "dataset.root"))
    assert picked == {
        "input": config["input"],
        "train": {"lam": 0.6, "losses": {"ical": True}},
        "dataset": {"root": config["dataset"]["root"]},
    }
    picked["input"]["height"] = 1  # a copy: the config is left alone
    assert config["input"]["height"] != 1
    # A section and one of its keys: the section, whole.
    assert select_keys(config, ("train", "train.lam"))["train"] == config["train"]


def test_select_keys_names_a_key_that_does_not_exist() -> None:
    with pytest.raises(KeyError, match="config key train.lamda does not exist"):
        select_keys(validate({}), ("train.lamda",))


def test_restrict_to_keeps_only_the_keys_of_the_shape() -> None:
    config = validate({})
    shape = select_keys(config, ("eval", "train.num_workers", "train.losses.ical"))
    assert restrict_to(config, shape) == shape


def test_cross_field_rules_cover_only_the_keys_a_rule_passes() -> None:
    """Stage 2 gets train.epochs but not train.adv_start (a stage-3 key): the default
    adv_start (40) must not be held against the run's 5 epochs; a stage run by hand, or a rule
    passing both keys, is still checked."""
    from ccafl.checks import config_problems

    given = {"train": {"epochs": 5, "intra_epochs": 2, "warmup_epochs": 1}}
    config = validate(given)
    assert config_problems(config, given) == []
    assert any("train.adv_start (40)" in p for p in config_problems(config))
    both = {"train": {**given["train"], "adv_start": 40, "losses": {"ical": True}}}
    assert any("train.adv_start (40)" in p for p in config_problems(validate(both), both))


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch):
    from ccafl.cli import main

    handler = signal.getsignal(signal.SIGTERM)

    def call(strict: bool, *args: str) -> int:
        monkeypatch.setenv("CCAFL_STRICT_CONFIG", "1" if strict else "0")
        try:
            return main([*args, "--stage-keys"])  # how the rules call a stage
        finally:
            signal.signal(signal.SIGTERM, handler)

    return call


def test_strict_config_fails_a_stage_that_reads_a_key_it_was_not_given(
    market_tree: Path, tmp_path: Path, run_cli
) -> None:
    """ics reads dataset.verify_images and dataset.layout too: a rule passing only root and
    format would rerun nothing when they change. Strict, the stage stops; not strict, it
    silently takes the defaults (what the end-to-end tests guard against)."""
    partial = json.dumps({"dataset": {"root": str(market_tree), "format": "market1501"}})
    with pytest.raises(KeyError, match="verify_images"):
        run_cli(True, "ics", "--set", partial, "--out-dir", str(tmp_path / "strict"))
    assert run_cli(False, "ics", "--set", partial, "--out-dir", str(tmp_path / "loose")) == 0
    full = {
        "dataset": {
            "root": str(market_tree),
            "format": "market1501",
            "verify_images": "header",
            "layout": "auto",
        }
    }
    out = tmp_path / "complete"
    assert run_cli(True, "ics", "--set", json.dumps(full), "--out-dir", str(out)) == 0
    assert (out / "train.parquet").is_file()
