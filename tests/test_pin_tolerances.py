"""The e2e pins' tolerances cover what was measured to move them (tests/e2e/spread.json:
the tiny DAG at 1 and 2 threads and with every kernel capped at AVX2)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.pin import EPOCH_KEYS, EVAL_KEYS, PINNED, TOLERANCES, differences

SPREAD = Path(__file__).resolve().parent / "e2e" / "spread.json"


def _pinned_figures(run: dict) -> dict:
    return {
        "eval": {key: run["ccafl"][key] for key in EVAL_KEYS},
        "epochs": {
            epoch: {key: values[key] for key in EPOCH_KEYS}
            for epoch, values in run["association"].items()
        },
    }


def test_every_measured_run_is_within_the_tolerances_of_the_pins():
    pinned = json.loads(PINNED.read_text())
    runs = json.loads(SPREAD.read_text())["runs"]
    assert len({(r["threads"], r["isa"]) for r in runs}) >= 3
    for run in runs:
        moved = differences(_pinned_figures(run), pinned)
        assert not moved, f"{run['threads']} thread(s), {run['isa']}: {moved}"


def test_the_pins_are_the_two_thread_run_of_the_spread():
    """pinned.json and spread.json were measured on the same code (regenerate both together)."""
    runs = json.loads(SPREAD.read_text())["runs"]
    reference = next(r for r in runs if r["threads"] == 2 and r["isa"] == "native")
    assert not differences(_pinned_figures(reference), json.loads(PINNED.read_text()), {})


def test_tolerances_are_not_looser_than_needed():
    """mAP and mINP tolerances stay within 25x the largest measured move (floor 0.0005)."""
    runs = json.loads(SPREAD.read_text())["runs"]
    for key in ("mAP", "mINP"):
        values = [r["ccafl"][key] for r in runs]
        measured = max(values) - min(values)
        assert TOLERANCES[key] <= 25 * max(measured, 0.0005), (key, measured)
