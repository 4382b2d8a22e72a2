"""A finished run's figures beside the range the demo is measured to take (``make demo`` ends
with it).

The demo's figures are not one number: another CPU (other SIMD kernels in MKL, oneDNN or
ATen), another thread count or another seed rounds a sum differently, the association's
thresholds turn that into another trajectory, and the final mAP moves by a few points. The
range is measured, not guessed: ``scripts/demo_spread.py`` runs the whole demo over seeds and
thread counts and writes ``docs/demo-spread.json``; this module reads that file.

The expected range of a figure is mean ± 2 standard deviations over those runs (about 95 % of
runs if they scatter normally), never narrower than what was observed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

FIGURES = ("mAP", "rank1", "mINP")
LABELS = {"mAP": "mAP", "rank1": "rank-1", "mINP": "mINP"}


@dataclass(frozen=True)
class Spread:
    """One figure over the measured runs, in percent."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def low(self) -> float:
        return min(self.mean - 2 * self.std, min(self.values))

    @property
    def high(self) -> float:
        return max(self.mean + 2 * self.std, max(self.values))

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return (
            f"{self.mean:.1f} ± {self.std:.1f} (runs {min(self.values):.1f}-{max(self.values):.1f},"
            f" expected {self.low:.1f}-{self.high:.1f})"
        )


def spreads(measured: dict, model: str) -> dict[str, Spread]:
    """``{figure: Spread}`` of ``model`` ("ccafl" or "zeroshot") over every run of a
    demo_spread.json table (seeds, thread counts, and kernels capped at AVX2: each is a
    configuration some user's machine runs)."""
    runs = measured["runs"]
    if not runs:
        raise ValueError("the spread table has no runs: run scripts/demo_spread.py")
    return {figure: Spread(tuple(100 * run[model][figure] for run in runs)) for figure in FIGURES}


def describe_runs(measured: dict) -> str:
    """'8 runs: seeds 0, 1, 2 x 1, 2 threads x native, avx2 kernels' for a spread table."""
    runs = measured["runs"]

    def values(key: str) -> str:
        return ", ".join(map(str, sorted({run[key] for run in runs})))

    return (
        f"{len(runs)} runs: seeds {values('seed')} x {values('threads')} thread(s) x "
        f"{values('isa')} kernels"
    )


def summary_lines(metrics: dict, zeroshot_best: dict, measured: dict | None) -> list[str]:
    """The lines ``make demo`` ends with: this run's CCAFL and best zero-shot figures, each
    beside its measured range when ``measured`` (a demo_spread.json table) is given."""
    rows = [("CCAFL (this run)", metrics, "ccafl")]
    zeroshot_name = f"zero-shot CLIP ({zeroshot_best['feature']}, {zeroshot_best['way']})"
    rows.append((zeroshot_name, zeroshot_best, "zeroshot"))
    width = max(len(name) for name, _, _ in rows)
    header = f"{'':{width}}  " + "  ".join(f"{LABELS[f]:>6}" for f in FIGURES)
    lines = [header]
    verdicts = []
    for name, values, model in rows:
        line = f"{name:{width}}  " + "  ".join(f"{100 * values[f]:6.1f}" for f in FIGURES)
        if measured is not None:
            expected = spreads(measured, model)["mAP"]
            inside = expected.holds(100 * values["mAP"])
            verdicts.append(inside)
            line += f"   mAP expected {expected.low:.1f}-{expected.high:.1f}"
            line += "" if inside else "  <- outside the measured range"
        lines.append(line)
    if measured is not None:
        lines.append(
            f"expected ranges: mean ± 2 std over {describe_runs(measured)} (docs/results.md)"
        )
        lines.append(
            "within the expected range"
            if all(verdicts)
            else "OUTSIDE the expected range: see docs/troubleshooting.md, 'Figures outside the demo's range'"
        )
    return lines
