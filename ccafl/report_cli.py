"""CLI command of the report stage: plots and tables of a finished run.

Every file the report reads is named on the command line (the report rule passes its inputs),
so the rules stay the one place that says where an artifact lives.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ccafl.commands import command
from ccafl.settings import Settings

log = logging.getLogger("ccafl")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the plots and tables")
    p.add_argument("--metrics", type=Path, help="eval/metrics.json of the trained model")
    p.add_argument("--cmc", type=Path, help="eval/cmc.parquet")
    p.add_argument("--features", type=Path, help="eval/features.parquet (t-SNE, retrieval)")
    p.add_argument(
        "--training-log",
        nargs=2,
        action="append",
        default=[],
        metavar=("STAGE", "PARQUET"),
        help="log.parquet of a training stage: clip (caption pretraining), prompt or intra "
        "(repeat per stage)",
    )
    p.add_argument(
        "--epoch",
        nargs=3,
        action="append",
        default=[],
        metavar=("EPOCH", "LOG", "METRICS"),
        help="an inter-camera epoch: its number, log.parquet and metrics.json (repeat)",
    )
    p.add_argument(
        "--attribute-zero-shot",
        type=Path,
        help="clip/zero_shot.json: attribute retrieval of the caption-pretrained CLIP",
    )
    p.add_argument(
        "--reference",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON"),
        help="a reference evaluation (reference/zeroshot.json) shown beside the trained model",
    )
    p.add_argument(
        "--benchmark",
        nargs=2,
        action="append",
        default=[],
        metavar=("JOB", "TSV"),
        help="Snakemake benchmark file of a job, for the timings (repeat per job)",
    )


@command("plots and tables of a finished run, for `snakemake --report`", _report_args)
def report(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.report import ReportInputs, build_report

    unknown = {stage for stage, _ in args.training_log} - {"clip", "prompt", "intra"}
    if unknown:
        raise SystemExit(f"report: --training-log STAGE is clip, prompt or intra, not {unknown}")
    inputs = ReportInputs(
        metrics=args.metrics,
        cmc=args.cmc,
        features=args.features,
        # The images of the retrieval examples.
        dataset_root=Path(settings.dataset.root),
        training_logs={stage: Path(path) for stage, path in args.training_log},
        epochs={int(epoch): (Path(lg), Path(m)) for epoch, lg, m in args.epoch},
        attribute_zero_shot=args.attribute_zero_shot,
        references={name: Path(path) for name, path in args.reference},
        benchmarks={job: Path(path) for job, path in args.benchmark},
    )
    summary = build_report(inputs, args.out_dir)
    for name, reason in summary["skipped"].items():
        log.info("%s is a placeholder: %s", name, reason)
    log.info(
        "report written to %s (%d files, %d placeholders) in %.1f s",
        args.out_dir,
        len(summary["outputs"]),
        len(summary["skipped"]),
        summary["seconds"],
    )
