"""Contact sheets of a search: one row per query (the query, then its ranked gallery images).

Two forms of the same sheet, written atomically:

* a PNG, for a report or a chat message;
* a self-contained HTML page (thumbnails embedded as data: URIs, no script or style fetched
  from anywhere), so it opens in any browser from wherever it is copied. A small inline script
  counts the thumbnails the browser actually decoded into ``<body data-images-shown>``, which
  is what the headless-browser test reads.

Frames: green when the gallery image's person id equals the query's (both known), red when it
differs, grey when unknown. Each caption: rank, camera, cosine score.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ccafl.io import atomic_path, write_text

log = logging.getLogger(__name__)

__all__ = ["write_contact_sheet_html", "write_contact_sheet_png"]

THUMB_HEIGHT = 128
_CAPTION = 28
_PAD = 6
_FRAME = 4
_COLOURS = {True: (40, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}


def _resolve(path: str, root: Path | None) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() or root is None else root / candidate


def _thumbnail(path: Path, height: int = THUMB_HEIGHT) -> Image.Image:
    """The image scaled to ``height`` (aspect kept); a grey placeholder if it cannot be read."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except Exception as error:  # moved or unreadable: the ranking is still worth showing
        log.warning("contact sheet: cannot read %s (%s); showing a placeholder", path, error)
        return Image.new("RGB", (height // 2, height), (200, 200, 200))
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def _match(row: pd.Series) -> bool | None:
    value = row.get("match")
    return None if value is None or pd.isna(value) else bool(value)


def _groups(ranking: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(query path, its rows by rank) in the order queries first appear."""
    order = list(dict.fromkeys(ranking["query"]))
    return [(q, ranking[ranking["query"] == q].sort_values("rank")) for q in order]


def write_contact_sheet_png(
    ranking: pd.DataFrame, out: str | Path, gallery_root: str | Path | None = None
) -> Path:
    """The sheet as one PNG: a row per query, query image first (blue frame)."""
    root = Path(gallery_root) if gallery_root is not None else None
    groups = _groups(ranking)
    if not groups:
        raise ValueError("nothing to draw: the ranking is empty")
    rows = []
    for query, hits in groups:
        cells = [(_thumbnail(Path(query)), (40, 90, 220), "query")]
        for _, hit in hits.iterrows():
            caption = f"{int(hit['rank'])} {hit['camera']} {hit['score']:.2f}"
            cells.append((_thumbnail(_resolve(hit["path"], root)), _COLOURS[_match(hit)], caption))
        rows.append(cells)
    cell_w = max(img.width for cells in rows for img, _, _ in cells) + 2 * _FRAME
    cell_h = THUMB_HEIGHT + 2 * _FRAME + _CAPTION
    n_cols = max(len(cells) for cells in rows)
    sheet = Image.new(
        "RGB",
        (_PAD + n_cols * (cell_w + _PAD), _PAD + len(rows) * (cell_h + _PAD)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for r, cells in enumerate(rows):
        y = _PAD + r * (cell_h + _PAD)
        for c, (image, colour, caption) in enumerate(cells):
            x = _PAD + c * (cell_w + _PAD)
            draw.rectangle([x, y, x + cell_w - 1, y + THUMB_HEIGHT + 2 * _FRAME - 1], fill=colour)
            sheet.paste(image, (x + (cell_w - image.width) // 2, y + _FRAME))
            draw.text((x + 2, y + THUMB_HEIGHT + 2 * _FRAME + 4), caption, fill=(0, 0, 0))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font-family: sans-serif; margin: 16px; }
.query-row { display: flex; gap: 6px; align-items: flex-start; margin-bottom: 14px; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { display: block; height: 128px; border: 4px solid #999; }
figure.query img { border-color: #2860dc; }
figure.match img { border-color: #28aa3c; }
figure.mismatch img { border-color: #d22828; }
figcaption { max-width: 140px; overflow-wrap: anywhere; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var shown = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) shown++; });
  document.body.dataset.imagesShown = String(shown);
  document.getElementById("status").textContent = shown + " of " + images.length + " images shown";
});
"""


def write_contact_sheet_html(
    ranking: pd.DataFrame,
    out: str | Path,
    gallery_root: str | Path | None = None,
    *,
    title: str = "ccafl search",
) -> Path:
    """The sheet as one self-contained HTML page (thumbnails embedded)."""
    root = Path(gallery_root) if gallery_root is not None else None
    groups = _groups(ranking)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>",
        f'<body data-images-total="{len(ranking) + len(groups)}">',
        f"<h1>{html.escape(title)}</h1>",
        '<p id="status">images not counted yet</p>',
    ]
    for query, hits in groups:
        camera = hits["query_camera"].iloc[0] if len(hits) else None
        parts.append(f'<section class="query-row" data-query="{html.escape(query)}">')
        parts.append(
            _figure(Path(query), "query", f"query ({camera})" if camera else "query", query)
        )
        for _, hit in hits.iterrows():
            match = _match(hit)
            css = {True: "match", False: "mismatch", None: "unknown"}[match]
            caption = f"#{int(hit['rank'])} · {hit['camera']} · {hit['score']:.3f}"
            if "rerank_distance" in hit and not np.isnan(hit["rerank_distance"]):
                caption += f" · d*={hit['rerank_distance']:.3f}"
            parts.append(_figure(_resolve(hit["path"], root), css, caption, hit["path"]))
        parts.append("</section>")
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>", ""]
    return write_text("\n".join(parts), out)


def _figure(path: Path, css: str, caption: str, label: str) -> str:
    uri = _data_uri(_thumbnail(path))
    return (
        f'<figure class="{css}"><img src="{uri}" alt="{html.escape(label)}" '
        f'data-path="{html.escape(label)}" title="{html.escape(label)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
