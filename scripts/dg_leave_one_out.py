"""Leave-one-out domain generalisation: one DG run per held-out domain, then one table.

A leave-one-out protocol (CLIP-FGDI's Protocols 2 and 3) trains on all domains but one and
evaluates on the one left out, for every domain in turn, and reports the average over the
held-out domains. Each held-out domain is its own run of this repository's workflow
(``snakemake dg``) with::

    dataset.name = <the config's dataset.name>-<held-out domain>
    dg.sources   = every other domain of dg.domains
    dg.targets   = [<held-out domain>]

run in this folder, so each has its own ``results/<name>-<domain>/`` and a finished one is not
run again (Snakemake's own bookkeeping: an interrupted protocol resumes). Then
``python -m ccafl dg-table --from`` merges the runs' ``dg/table.json`` into
``results/<name>-leave-one-out/table.{md,csv,json}``: every model on every held-out domain,
and its Average (per seed the mean over held-out domains, then mean ± std over seeds).

The domain whose web photos pretrain the tiny CLIP (``dg.captions``) must stay a source, so
it is never held out by default; ``--held-out`` names the domains to hold out.

    python scripts/dg_leave_one_out.py                              # every other domain
    python scripts/dg_leave_one_out.py --held-out south west --cores 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def held_out_runs(config: dict, held_out: list[str] | None) -> list[tuple[str, dict]]:
    """(dataset.name, --config overrides) of each held-out run."""
    dg = config["dg"]
    domains = list(dg["domains"])
    captions = dg.get("captions") or dg["sources"][0]
    chosen = held_out or [d for d in domains if d != captions]
    unknown = [d for d in chosen if d not in domains]
    if unknown:
        raise SystemExit(f"--held-out: {unknown} not in dg.domains ({domains})")
    if captions in chosen:
        raise SystemExit(
            f"--held-out: {captions} is dg.captions (its web photos pretrain CLIP), so it must "
            "stay a source"
        )
    name = config["dataset"]["name"]
    return [
        (
            f"{name}-{domain}",
            {
                "dataset": {"name": f"{name}-{domain}"},
                "dg": {"sources": [d for d in domains if d != domain], "targets": [domain]},
            },
        )
        for domain in chosen
    ]


def snakemake(configfile: Path, overrides: dict, cores: int, *targets: str) -> None:
    command = [
        sys.executable, "-m", "snakemake", *targets, "--cores", str(cores),
        "--configfile", str(configfile), "--config",
        *(f"{key}={json.dumps(value)}" for key, value in overrides.items()),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configfile", type=Path, default=Path("config/dg-synthetic.yaml"), help="a DG config"
    )
    parser.add_argument(
        "--held-out", nargs="+", help="domains to hold out, one run each (default: every "
        "domain but dg.captions)"
    )  # fmt: skip
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.configfile.read_text())
    runs = held_out_runs(config, args.held_out)
    for index, (name, overrides) in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {name}: held out {overrides['dg']['targets'][0]}", flush=True)
        start = time.perf_counter()
        snakemake(args.configfile, overrides, args.cores, "dg")
        print(f"[{index}/{len(runs)}] {name}: {time.perf_counter() - start:.0f} s", flush=True)
    out = Path("results") / f"{config['dataset']['name']}-leave-one-out"
    tables = [arg for name, _ in runs for arg in ("--from", f"results/{name}/dg/table.json")]
    subprocess.run(
        [
            sys.executable, "-m", "ccafl", "dg-table", *tables, "--out", str(out / "table.md"),
            "--csv", str(out / "table.csv"), "--json", str(out / "table.json"),
        ],
        check=True,
    )  # fmt: skip
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
