"""The front page of a run: one self-contained HTML file (``report/index.html``).

Snakemake's own report (`snakemake --report`) holds every plot and job timing but opens on a
list of categories; this page shows what a reader wants first, on one screen: the metrics table
with its reference rows, how the cross-camera association improved per epoch, retrieval
examples, the CMC curve and the training losses. It is built from the files the report stage
has just written beside it (the plots and ``metrics.csv``), each image embedded as a data URI,
so the file opens from anywhere (a laptop after `scp`, an e-mail attachment).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from ccafl.io import write_text

#: The plots of the page, in order, each with what it shows.
FIGURES = (
    (
        "association.png",
        "Cross-camera association per epoch",
        "Pairwise precision, recall and F-score of the pseudo-labels against the "
        "diagnostics-only truth table (training never reads it), expansion (clusters per "
        "person; 1 is ideal) and the number of clusters.",
    ),
    (
        "retrieval.png",
        "Retrieval examples",
        "Each row: a query (blue frame) and its ten nearest gallery images under the "
        "Market-1501 protocol; green frames are the query's person, red frames other people.",
    ),
    (
        "cmc.png",
        "CMC curve",
        "Share of queries whose person appears within the first k gallery images.",
    ),
    (
        "losses.png",
        "Training losses",
        "Every loss term per epoch, stage by stage.",
    ),
)
_PERCENT = ("mAP", "mINP", "rank-1", "rank-5", "rank-10")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
p.note { color: #555; font-size: 13px; margin: 4px 0 10px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.trained td { font-weight: 600; background: #eef6ee; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _metrics_html(metrics_csv: Path) -> str:
    """The metrics table: the trained model first (highlighted), then the reference rows."""
    table = pd.read_csv(metrics_csv)
    if "mAP" not in table.columns:  # a placeholder table: one "note" column saying why
        return f'<p class="note">{html.escape(str(table.iloc[0, 0]))}</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("model", *_PERCENT))
    rows = []
    for position, values in enumerate(table.to_dict("records")):
        cells = [html.escape(str(values["model"]))]
        cells += [f"{100 * float(values[c]):.1f}" for c in _PERCENT]
        css = ' class="trained"' if position == 0 else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def front_page_html(report_dir: str | Path, run_name: str) -> str:
    """The page's HTML from the metrics table and plots in ``report_dir``."""
    report_dir = Path(report_dir)
    title = f"ccafl run: {html.escape(run_name)}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>",
        "<h2>Retrieval metrics (Market-1501 protocol, %)</h2>",
        '<p class="note">The first row is the trained model; below it the reference rows: the '
        "pretrained network without ReID training, per retrieval feature, raw and with its "
        "BN-necks calibrated on the training images. Training that does not beat them has "
        "learnt nothing.</p>",
        _metrics_html(report_dir / "metrics.csv"),
    ]
    for name, heading, note in FIGURES:
        parts.append(f"<h2>{html.escape(heading)}</h2><p class='note'>{html.escape(note)}</p>")
        parts.append(f"<img alt='{html.escape(heading)}' src='{_data_uri(report_dir / name)}'>")
    parts.append(
        "<p class='note'>Every plot, table and job timing: <code>snakemake --report "
        "report.html</code>.</p></body></html>"
    )
    return "\n".join(parts)


def write_front_page(report_dir: str | Path, run_name: str) -> Path:
    """Write ``report_dir/index.html`` (atomically) and return its path."""
    report_dir = Path(report_dir)
    return write_text(front_page_html(report_dir, run_name), report_dir / "index.html")
