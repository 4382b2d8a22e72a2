"""Benchmark: wall time of `snakemake -n` on the paper-size DAG against the demo DAG.

Paper size: the embedded config with the paper's schedule (80 epochs, E_intra 5, E_adv 40,
10 warm-up epochs), i.e. one inter_epoch job per epoch 6..80; when the config has an
`ablation` section, also the eight Table IV variants at one seed (target `ablation`), each a
full chain of its own. Baseline, measured in the same run: the dry run of the embedded demo
config as it is (16 epochs, target `all`). Both include Snakemake's own start-up, as a user
sees it; the figure is the median over `--repeat` runs. Goal: paper size <= 5 s.

Every dry run works in an empty temporary directory (`--directory`), with the config given
as a merged file (`--configfile`), so nothing is written under results/, resources/ or the
repository's .snakemake/.

    python benchmarks/bench_dag_dryrun.py
    python benchmarks/bench_dag_dryrun.py --repeat 5 --epochs 120
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"
GOAL_S = 5.0


def snakemake_exe() -> str:
    candidate = Path(sys.executable).with_name("snakemake")
    return str(candidate) if candidate.exists() else "snakemake"


def paper_config(base: dict, epochs: int, intra_epochs: int, n_variants: int) -> dict:
    config = copy.deepcopy(base)
    config["train"].update(
        epochs=epochs,
        intra_epochs=intra_epochs,
        adv_start=min(40, epochs),
        warmup_epochs=min(10, epochs),
    )
    if "ablation" in config:
        ablation = config["ablation"]
        ablation["seeds"] = ablation.get("seeds", [0])[:1]  # one seed: n_variants chains
        if "variants" in ablation:
            ablation["variants"] = dict(list(ablation["variants"].items())[:n_variants])
    return config


def has_rule(name: str) -> bool:
    pattern = re.compile(rf"^rule {re.escape(name)}\s*:", re.M)
    return any(pattern.search(p.read_text()) for p in (REPO / "workflow").rglob("*.smk")) or bool(
        pattern.search((REPO / "workflow" / "Snakefile").read_text())
    )


def dry_run(config: dict, targets: list[str], workdir: Path) -> tuple[float, dict[str, int]]:
    """Seconds of one `snakemake -n` and its job counts per rule."""
    config_file = workdir / "bench-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    command = [
        snakemake_exe(),
        "-n",
        "--configfile",  # takes several values: keep it before the other options
        str(config_file),
        "--cores",
        "1",
        "--directory",
        str(run_dir),
        *targets,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"dry run failed ({' '.join(command)}):\n{out[-4000:]}")
    if (run_dir / "results").exists():
        raise SystemExit("a dry run wrote results: refusing to continue")
    table = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    return seconds, counts


def measure(config: dict, targets: list[str], repeat: int, workdir: Path):
    runs = [dry_run(config, targets, workdir) for _ in range(repeat)]
    return statistics.median(s for s, _ in runs), runs[-1][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed dry runs per DAG (median)")
    parser.add_argument("--epochs", type=int, default=80, help="paper size: total epochs")
    parser.add_argument("--intra-epochs", type=int, default=5, help="paper size: E_intra")
    parser.add_argument(
        "--variants",
        type=int,
        default=8,
        help="ablation variants in the paper-size DAG (0: the main training chain only)",
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="the base config")
    args = parser.parse_args(argv)

    base = yaml.safe_load(args.config.read_text())
    paper = paper_config(base, args.epochs, args.intra_epochs, args.variants)
    paper_targets = ["all"]
    if "ablation" in base and args.variants > 0 and has_rule("ablation"):
        paper_targets.append("ablation")
    elif "ablation" in base and args.variants > 0:
        print(
            "note: the config has an ablation section but the workflow has no `ablation` rule yet"
        )

    with tempfile.TemporaryDirectory(prefix="ccafl-bench-dag-") as tmp:
        workdir = Path(tmp)
        dry_run(base, ["all"], workdir)  # warm-up: file-system caches, .pyc files
        demo_s, demo_jobs = measure(base, ["all"], args.repeat, workdir)
        paper_s, paper_jobs = measure(paper, paper_targets, args.repeat, workdir)

    def describe(jobs: dict[str, int]) -> str:
        return f"{jobs.get('total', 0)} jobs ({jobs.get('inter_epoch', 0)} inter_epoch)"

    print(f"snakemake -n, median of {args.repeat} (Snakemake start-up included)")
    print(f"  demo DAG  (config as is, target all):        {demo_s:6.2f} s  {describe(demo_jobs)}")
    print(
        f"  paper DAG (epochs {args.epochs}, E_intra {args.intra_epochs}, "
        f"targets {' '.join(paper_targets)}): {paper_s:6.2f} s  {describe(paper_jobs)}"
    )
    print(f"  ratio paper / demo: {paper_s / demo_s:.2f}x")
    verdict = "met" if paper_s <= GOAL_S else "MISSED"
    print(f"  goal paper <= {GOAL_S:.0f} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
