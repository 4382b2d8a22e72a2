"""The report stage: plots and tables of a finished run, for `snakemake --report`.

Everything here reads the artifacts the report rule names (:class:`ReportInputs`: the rule
passes every file on the command line; no path is built here, so the DAG stays the one place
that says where an artifact lives) and writes into ``results/<name>/report/``. The set of files
written is fixed (:data:`OUTPUTS`) whatever the run looked like, because Snakemake declares them
as the report rule's outputs: when an optional input is missing (no inter-camera epochs, no
caption-pretrained CLIP, no training truth for the association diagnostics, ...) the plot is
replaced by a small placeholder image that says why, and the table by a one-row note.

`inputs` reads the artifacts, `tables` and `plots` draw from them, `build_report` writes
them all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ccafl.io import write_text
from ccafl.report.inputs import NotAvailable, ReportInputs
from ccafl.report.page import write_front_page
from ccafl.report.plots import (
    ical_start,
    placeholder_png,
    plot_association,
    plot_cmc,
    plot_losses,
    plot_retrieval,
    plot_tsne,
    write_timings,
)
from ccafl.report.tables import (
    association_table,
    benchmark_table,
    placeholder_csv,
    write_metrics,
    zero_shot_table,
)

log = logging.getLogger(__name__)


def evaluation_distance(metrics: Path | None) -> str:
    """The distance the run was evaluated with (metrics.json's ``distance``; cosine before
    eval.distance existed, or without a metrics file)."""
    if metrics is None or not Path(metrics).is_file():
        return "cosine"
    return json.loads(Path(metrics).read_text()).get("distance", "cosine")


__all__ = [
    "OUTPUTS",
    "NotAvailable",
    "ReportInputs",
    "association_table",
    "benchmark_table",
    "build_report",
    "ical_start",
    "placeholder_png",
    "write_metrics",
]

TABLES = ("metrics.md", "metrics.csv", "timings.csv", "zero_shot.csv")
PLOTS = ("cmc.png", "losses.png", "association.png", "tsne.png", "retrieval.png", "timings.png")
PAGE = "index.html"  # the run's front page, built from the tables and plots above
#: Every file :func:`build_report` writes; the report rule declares exactly these.
OUTPUTS = TABLES + PLOTS + (PAGE,)


def build_report(inputs: ReportInputs, out_dir: str | Path, run_name: str = "") -> dict:
    """Write every file of :data:`OUTPUTS` into ``out_dir`` from the files ``inputs`` names.

    The front page (:data:`PAGE`, titled ``run_name``) comes last: it embeds the others.

    A plot or table whose inputs are missing is replaced by a placeholder saying why; the
    returned dict maps each output to its path (``outputs``) and each replaced one to the
    reason (``skipped``).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}

    def attempt(names: tuple[str, ...], make: Callable[[], object]) -> None:
        try:
            make()
        except NotAvailable as why:
            log.info("%s not available: %s", ", ".join(names), why)
            for name in names:
                skipped[name] = str(why)
                if name.endswith(".png"):
                    placeholder_png(out_dir / name, str(why))
                elif name.endswith(".csv"):
                    placeholder_csv(out_dir / name, str(why))
                else:
                    write_text(f"not available: {why}\n", out_dir / name)

    def zero_shot() -> None:
        table = zero_shot_table(inputs.attribute_zero_shot)
        write_text(table.to_csv(index=False, float_format="%.4f"), out_dir / "zero_shot.csv")

    attempt(
        ("metrics.md", "metrics.csv"),
        lambda: write_metrics(inputs.metrics, out_dir, inputs.references),
    )
    attempt(("cmc.png",), lambda: plot_cmc(inputs.cmc, inputs.metrics, out_dir / "cmc.png"))
    attempt(
        ("losses.png",),
        lambda: plot_losses(inputs.training_logs, inputs.epochs, out_dir / "losses.png"),
    )
    attempt(
        ("association.png",), lambda: plot_association(inputs.epochs, out_dir / "association.png")
    )
    attempt(("tsne.png",), lambda: plot_tsne(inputs.features, out_dir / "tsne.png"))
    attempt(
        ("retrieval.png",),
        lambda: plot_retrieval(
            inputs.features,
            inputs.dataset_root,
            out_dir / "retrieval.png",
            distance=evaluation_distance(inputs.metrics),
        ),
    )
    attempt(
        ("timings.csv", "timings.png"),
        lambda: write_timings(inputs.benchmarks, out_dir, ical_start(inputs.epochs)),
    )
    attempt(("zero_shot.csv",), zero_shot)
    write_front_page(out_dir, run_name)
    return {
        "outputs": {name: str(out_dir / name) for name in OUTPUTS},
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
