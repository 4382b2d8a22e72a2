"""How much the demo's figures vary: the whole demo DAG over run seeds and thread counts.

A user whose CPU rounds differently (another SIMD width in MKL, oneDNN or ATen's kernels,
another thread count splitting a sum differently) gets a different trajectory of the same
training, just as another seed gives one. So the demo's figures are stated as the range they
take over seeds and thread counts, measured here, not as one run's values.

Each combination is one fresh folder (``--work``/s<seed>-t<threads>) running this
repository's workflow on config/config.yaml with::

    clip_pretrain.seed = prompt.seed = train.seed = <seed>
    resources.threads_per_job = <threads>     # Snakemake sets OMP/MKL_NUM_THREADS from it

``--isa avx2`` also caps every numerical library at AVX2 (ATen, oneDNN, MKL, numpy, faiss),
i.e. runs the kernels an AVX2-only CPU would run, on this CPU.

The table (``--out``, JSON) is rewritten after every run, and a finished combination is not
run again, so an interrupted measurement resumes. The expected range ``make demo`` prints
(``python -m ccafl demo-summary``) is read from that file, ``docs/demo-spread.json``.

    python scripts/demo_spread.py --seeds 0 1 2 --threads 1 2     # ~35 min on 2 cores
    python scripts/demo_spread.py --config tests/e2e/config.yaml --seeds 0 --threads 1 2 \
        --out tests/e2e/spread.json                                # the e2e pins' tolerances
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "demo-spread.json"
ASSOCIATION_KEYS = ("assoc_precision", "assoc_recall", "n_clusters")
# What an AVX2-only x86-64 CPU would run: each library's own switch for its dispatch.
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
    "FAISS_OPT_LEVEL": "avx2",
}


def run_one(work: Path, config: Path, seed: int, threads: int, isa: str) -> dict:
    """One DAG of ``config`` in ``work`` (created); its figures and wall time."""
    if work.exists():
        shutil.rmtree(work)
    (work / "config").mkdir(parents=True)
    shutil.copy(config, work / "config" / "config.yaml")
    env = dict(os.environ, **(AVX2_CAPS if isa == "avx2" else {}))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "2",
        "--config",
        f'clip_pretrain={{"seed": {seed}}}',
        f'prompt={{"seed": {seed}}}',
        f'train={{"seed": {seed}}}',
        f'resources={{"threads_per_job": {threads}}}',
    ]
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(
            f"demo_spread: seed {seed}, {threads} threads failed:\n{done.stderr[-3000:]}"
        )
    name = yaml.safe_load(config.read_text())["dataset"]["name"]
    results = work / "results" / name
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    zeroshot = json.loads((results / "reference" / "zeroshot.json").read_text())["best"]
    keys = ("mAP", "rank1", "rank5", "rank10", "mINP")
    association = {}
    for folder in sorted((results / "inter").glob("epoch_*")):
        epoch = json.loads((folder / "metrics.json").read_text())
        association[folder.name] = {key: epoch[key] for key in ASSOCIATION_KEYS}
    return {
        "seed": seed,
        "threads": threads,
        "isa": isa,
        "wall_s": round(wall, 1),
        "ccafl": {key: metrics[key] for key in keys},
        "zeroshot": {"feature": zeroshot["feature"], "way": zeroshot["way"]}
        | {key: zeroshot[key] for key in keys},
        "association": association,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "config" / "config.yaml",
        help="the run's config (tests/e2e/config.yaml measures how far the e2e pins move)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--isa", choices=["native", "avx2"], default="native")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ccafl-demo-spread"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    table = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    done = {(r["seed"], r["threads"], r["isa"]) for r in table["runs"]}
    for threads in args.threads:
        for seed in args.seeds:
            if (seed, threads, args.isa) in done:
                continue
            print(f"demo seed {seed}, {threads} thread(s), {args.isa} ...", flush=True)
            row = run_one(
                args.work / f"s{seed}-t{threads}-{args.isa}", args.config, seed, threads, args.isa
            )
            print(
                f"  CCAFL mAP {row['ccafl']['mAP']:.4f}, zero-shot {row['zeroshot']['mAP']:.4f}, "
                f"{row['wall_s']:.0f} s",
                flush=True,
            )
            table["runs"].append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=2) + "\n")
            os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
