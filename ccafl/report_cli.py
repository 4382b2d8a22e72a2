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
    summary = build_report(inputs, args.out_dir, settings.dataset.name)
    for name, reason in summary["skipped"].items():
        log.info("%s is a placeholder: %s", name, reason)
    log.info(
        "report written to %s (%d files, %d placeholders) in %.1f s",
        args.out_dir,
        len(summary["outputs"]),
        len(summary["skipped"]),
        summary["seconds"],
    )


def _calr_clusters_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--epoch",
        nargs=2,
        action="append",
        default=[],
        metavar=("EPOCH", "METRICS"),
        help="a stage-B epoch: its number and metrics.json (repeat)",
    )
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")


@command(
    "diagnostics: CALR Fig. 5, the quality of stage B's global, local and refined clusters "
    "per epoch",
    _calr_clusters_args,
)
def calr_clusters_plot(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.report.inputs import NotAvailable
    from ccafl.report.plots import placeholder_png, plot_calr_clusters

    try:
        plot_calr_clusters({int(epoch): Path(path) for epoch, path in args.epoch}, args.out)
    except NotAvailable as why:  # custom data without truth: the declared output still exists
        log.info("CALR cluster plot is a placeholder: %s", why)
        placeholder_png(args.out, str(why))
        return
    log.info("CALR cluster quality of %d epochs drawn into %s", len(args.epoch), args.out)


def _demo_summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results", type=Path, default=Path("results/synthetic"), help="a run's results folder"
    )
    p.add_argument(
        "--expected",
        type=Path,
        help="the measured spread of the demo (docs/demo-spread.json, scripts/demo_spread.py); "
        "without it the figures are printed alone",
    )


@command(
    "a finished run's CCAFL and best zero-shot figures beside the demo's measured range",
    _demo_summary_args,
)
def demo_summary(args: argparse.Namespace, settings: Settings) -> None:
    import json

    from ccafl.errors import UserError
    from ccafl.report.expected import summary_lines

    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(
                f"{path} does not exist: run the pipeline first (make demo, or snakemake --cores all)"
            ) from None

    metrics = read(args.results / "eval" / "metrics.json")
    zeroshot = read(args.results / "reference" / "zeroshot.json")["best"]
    measured = read(args.expected) if args.expected else None
    print(f"ccafl: {args.results}")
    print("\n".join(summary_lines(metrics, zeroshot, measured)))


def _open_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results", type=Path, default=Path("results/synthetic"), help="a run's results folder"
    )


def _has_display() -> bool:
    import os
    import sys

    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


@command(
    "open a finished run's front page (report/index.html) in the browser, or print its path",
    _open_report_args,
)
def open_report(args: argparse.Namespace, settings: Settings) -> None:
    import webbrowser

    from ccafl.errors import UserError

    page = (args.results / "report" / "index.html").resolve()
    if not page.is_file():
        raise UserError(
            f"{page} does not exist: run the pipeline first "
            "(make demo, or snakemake --cores all report)"
        )
    print(f"{page}\n{page.as_uri()}")
    if _has_display():
        webbrowser.open(page.as_uri())
