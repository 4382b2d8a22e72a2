"""The end-to-end metrics pinned for the tiny integration config on CPU, and how to regenerate them.

tests/e2e/pinned.json holds what the e2e run (tests/e2e/config.yaml) must reproduce: the
evaluation's mAP, rank-1 and mINP and, per stage-3 epoch, the association's pairwise precision,
recall and number of clusters. tests/e2e/test_pipeline.py compares them within TOLERANCES, not
exactly: CI runs on another machine "like this one" but possibly another CPU, whose BLAS and
oneDNN kernels (AVX2 vs AVX-512, other blockings) round float sums differently, and the
association is discontinuous (a mutual nearest-neighbour edge or a distance threshold decides on
a near-tie), so one rounding difference can flip an edge and move everything trained after it
a little. Exact determinism on one machine is tested separately (the same run twice gives
bit-identical metrics and weights: test_pipeline.py's rerun and epoch-block tests).

A change that is *meant* to move the figures (the synthetic benchmark, training, evaluation)
regenerates the file with one command, run from the repository root:

    python -m tests.e2e.pin                      # runs the tiny DAG in a temporary folder
    python -m tests.e2e.pin --results DIR        # or pins an existing run's results/tiny

and the new pinned.json is committed with the change (its diff shows what moved).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "e2e" / "config.yaml"
PINNED = REPO / "tests" / "e2e" / "pinned.json"
REGENERATE = "python -m tests.e2e.pin"
# How far each figure may move on another CPU before the test calls it a change (absolute),
# set from what was measured (tests/e2e/spread.json, `python scripts/demo_spread.py --config
# tests/e2e/config.yaml --seeds 0 --threads 2 1` and `--isa avx2`): 1 and 2 threads and every
# kernel capped at AVX2 moved mAP by at most 0.0005 and mINP by 0.0008, and rank-1 and the
# association not at all. mAP and mINP: 0.01, over 10x that and well below what a broken
# equation does. Rank-1 moves in steps of one query (about 25 queries, 0.04 each): two steps.
# Association: the tiny world has about 40 ICS ids and a handful of associated pairs, so the
# smallest change, one flipped edge, moves precision by up to 1/7 and the cluster count by 1-2.
TOLERANCES = {
    "mAP": 0.01,
    "mINP": 0.01,
    "rank1": 0.09,
    "assoc_precision": 0.15,
    "assoc_recall": 0.15,
    "n_clusters": 2,
}
EVAL_KEYS = ("mAP", "rank1", "mINP")
EPOCH_KEYS = ("assoc_precision", "assoc_recall", "n_clusters")


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """This repository's workflow run in ``workdir`` (its config/config.yaml) on 2 cores."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]


# Every job sees only the config keys its rule passes (ccafl.cli): a stage that reads a key its
# rule leaves out fails in the e2e tests instead of silently running with the default.
STRICT = {**os.environ, "CCAFL_STRICT_CONFIG": "1"}


def strict_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The workflow in ``workdir`` under STRICT; a failure shows the end of every job log."""
    result = subprocess.run(
        snakemake_command(workdir, *args), capture_output=True, text=True, env=STRICT
    )
    if check and result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-6000:]}\n{logs}")
    return result


def run_pipeline(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The tiny DAG in ``workdir``, as the e2e test runs it."""
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True)


def collect(results: Path) -> dict:
    """The pinned figures of one run's ``results/<name>`` folder."""
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    epochs = {}
    for folder in sorted((results / "inter").glob("epoch_*")):
        epoch = json.loads((folder / "metrics.json").read_text())
        epochs[folder.name] = {key: epoch[key] for key in EPOCH_KEYS}
    return {"eval": {key: metrics[key] for key in EVAL_KEYS}, "epochs": epochs}


def differences(
    actual: dict, pinned: dict, tolerances: dict[str, float] | None = None, where: str = ""
) -> list[str]:
    """'<key>: <actual> (pinned <value> +- <tolerance>)' for every figure that moved more than
    its tolerance (TOLERANCES by default; ``{}`` compares exactly)."""
    tolerances = TOLERANCES if tolerances is None else tolerances
    if isinstance(pinned, dict) and isinstance(actual, dict):
        if actual.keys() != pinned.keys():
            return [f"{where or 'top level'}: keys {sorted(actual)} (pinned {sorted(pinned)})"]
        return [
            d for k in pinned for d in differences(actual[k], pinned[k], tolerances, f"{where}{k}.")
        ]
    key = where.rstrip(".").rsplit(".", 1)[-1]
    tolerance = tolerances.get(key, 0.0)
    if isinstance(pinned, int | float) and isinstance(actual, int | float):
        if math.isclose(actual, pinned, rel_tol=0, abs_tol=tolerance):
            return []
    elif actual == pinned:
        return []
    return [f"{where.rstrip('.')}: {actual!r} (pinned {pinned!r} +- {tolerance:g})"]


def write_pinned(values: dict, path: Path = PINNED) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Regenerate tests/e2e/pinned.json, the metrics the e2e test expects from the tiny "
            "config on CPU. Run when a change is meant to move them, and commit the file."
        )
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="pin this existing run's results/tiny folder instead of running the tiny DAG",
    )
    args = parser.parse_args(argv)
    if args.results:
        values = collect(args.results)
    else:
        work = Path(tempfile.mkdtemp(prefix="ccafl-pin-"))
        try:
            (work / "config").mkdir()
            shutil.copy(CONFIG, work / "config" / "config.yaml")
            print(f"running the tiny DAG in {work} (a few minutes on 2 cores) ...", flush=True)
            done = run_pipeline(work)
            if done.returncode != 0:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            values = collect(work / "results" / "tiny")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    old = json.loads(PINNED.read_text()) if PINNED.is_file() else None
    write_pinned(values)
    moved = differences(values, old, {}) if old is not None else ["(no previous pins)"]
    print(f"wrote {PINNED.relative_to(REPO)}; changed: " + ("; ".join(moved) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
