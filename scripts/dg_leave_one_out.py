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

The domain whose web photos pretrain the tiny CLIP (``dg.captions``, when ``clip.pretrained`` is
``captions``) and training-only datasets (CUHK-SYSU) stay sources, so they are never held out
by default; ``--held-out`` names the domains to hold out. Several config files are laid over
each other as Snakemake does (``--configfile config/dg-protocol2.yaml config/dg-protocol3.yaml``).

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

from ccafl.config import deep_merge
from ccafl.data.dg_datasets import TRAIN_ONLY


def held_out_runs(config: dict, held_out: list[str] | None) -> list[tuple[str, dict]]:
    """(dataset.name, --config overrides) of each held-out run."""
    dg = config["dg"]
    domains = list(dg["domains"])
    captions = None  # only a run whose CLIP is pretrained on a source's captions has one
    if config.get("clip", {}).get("pretrained") == "captions":
        captions = dg.get("captions") or dg["sources"][0]
    # CUHK-SYSU has no query and gallery: it is always a source (CLIP-FGDI's Protocols 2-3)
    train_only = [d for d, e in dg["domains"].items() if e.get("format") in TRAIN_ONLY]
    chosen = held_out or [d for d in domains if d != captions and d not in train_only]
    unknown = [d for d in chosen if d not in domains]
    if unknown:
        raise SystemExit(f"--held-out: {unknown} not in dg.domains ({domains})")
    if set(chosen) & set(train_only):
        raise SystemExit(
            f"--held-out: {sorted(set(chosen) & set(train_only))} has no query and gallery "
            "(training only), so it stays a source"
        )
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


def merged_config(configfiles: list[Path]) -> dict:
    """The config files merged as Snakemake merges them (later files win, key by key)."""
    config: dict = {}
    for path in configfiles:
        config = deep_merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def snakemake(configfiles: list[Path], overrides: dict, cores: int, *targets: str) -> None:
    command = [
        sys.executable, "-m", "snakemake", *targets, "--cores", str(cores),
        "--configfile", *map(str, configfiles), "--config",
        *(f"{key}={json.dumps(value)}" for key, value in overrides.items()),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configfile",
        type=Path,
        nargs="+",
        default=[Path("config/dg-synthetic.yaml")],
        help="a DG config, or several laid over each other (e.g. config/dg-protocol2.yaml "
        "config/dg-protocol3.yaml)",
    )
    parser.add_argument(
        "--held-out", nargs="+", help="domains to hold out, one run each (default: every "
        "domain but dg.captions and the training-only ones)"
    )  # fmt: skip
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    config = merged_config(args.configfile)
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
