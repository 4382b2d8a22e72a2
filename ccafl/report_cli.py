"""CLI command of the report stage: plots and tables of a finished run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ccafl.cli import command

log = logging.getLogger("ccafl")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results-dir", required=True, type=Path, help="the run's artifacts (results/<name>)"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        help="folder for the plots and tables (default: <results-dir>/report)",
    )


@command("report", "plots and tables of a finished run, for `snakemake --report`", _report_args)
def _report(args: argparse.Namespace, config: dict) -> None:
    from ccafl.report import build_report

    out_dir = args.out_dir or args.results_dir / "report"
    summary = build_report(args.results_dir, config["dataset"]["root"], out_dir, config)
    for name, reason in summary["skipped"].items():
        log.info("%s is a placeholder: %s", name, reason)
    log.info(
        "report written to %s (%d files, %d placeholders) in %.1f s",
        out_dir,
        len(summary["outputs"]),
        len(summary["skipped"]),
        summary["seconds"],
    )
