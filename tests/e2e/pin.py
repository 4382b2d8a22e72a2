"""The end-to-end metrics pinned for the tiny integration config on CPU, and how to regenerate them.

Training is deterministic on CPU, so the e2e run (tests/e2e/config.yaml) must reproduce its
evaluation metrics and its per-epoch association figures exactly; tests/e2e/pinned.json holds
them and tests/e2e/test_pipeline.py compares. A change that is *meant* to move them (the
synthetic benchmark, training, evaluation) regenerates the file with one command, run from the
repository root:

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
TOLERANCE = 1e-6
EVAL_KEYS = ("mAP", "rank1", "mINP")
EPOCH_KEYS = ("assoc_precision", "assoc_recall", "n_clusters")


def run_pipeline(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The tiny DAG in ``workdir`` (its config/config.yaml), as the e2e test runs it."""
    command = [
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
    return subprocess.run(command, capture_output=True, text=True)


def collect(results: Path) -> dict:
    """The pinned figures of one run's ``results/<name>`` folder."""
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    epochs = {}
    for folder in sorted((results / "inter").glob("epoch_*")):
        epoch = json.loads((folder / "metrics.json").read_text())
        epochs[folder.name] = {key: epoch[key] for key in EPOCH_KEYS}
    return {"eval": {key: metrics[key] for key in EVAL_KEYS}, "epochs": epochs}


def differences(actual: dict, pinned: dict, where: str = "") -> list[str]:
    """'<key>: <actual> (pinned <value>)' for every figure that moved more than TOLERANCE."""
    if isinstance(pinned, dict) and isinstance(actual, dict):
        if actual.keys() != pinned.keys():
            return [f"{where or 'top level'}: keys {sorted(actual)} (pinned {sorted(pinned)})"]
        return [d for k in pinned for d in differences(actual[k], pinned[k], f"{where}{k}.")]
    if isinstance(pinned, int | float) and isinstance(actual, int | float):
        if math.isclose(actual, pinned, rel_tol=0, abs_tol=TOLERANCE):
            return []
    elif actual == pinned:
        return []
    return [f"{where.rstrip('.')}: {actual!r} (pinned {pinned!r})"]


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
    moved = differences(values, old) if old is not None else ["(no previous pins)"]
    print(f"wrote {PINNED.relative_to(REPO)}; changed: " + ("; ".join(moved) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
