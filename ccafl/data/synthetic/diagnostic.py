"""Camera-bias diagnostic: how well colour alone tells the camera, against the person."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ccafl.data.synthetic.vocabulary import MARKET_NAME

# --------------------------------------------------------------------------------------------
# Camera-bias diagnostic


def _colour_histogram(path: Path, bins: int = 8) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), np.int64) * bins // 256
    index = (rgb[..., 0] * bins + rgb[..., 1]) * bins + rgb[..., 2]
    hist = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def _parse_folder(folder: Path) -> list[tuple[Path, int, int]]:
    items = []
    for path in sorted(folder.glob("*.jpg")):
        match = MARKET_NAME.match(path.name)
        if match:
            items.append((path, int(match.group(1)), int(match.group(2))))
    return items


def camera_bias_diagnostic(root: str | Path, max_images: int | None = None) -> dict:
    """Naive colour-histogram retrieval on the test split: same-camera vs cross-camera rank-1.

    Computation: every image of ``query/`` and ``bounding_box_test/`` with pid > 0 (distractors
    and junk excluded) becomes a joint RGB histogram (8 levels per channel, 512 bins, sum 1);
    similarity is the Bhattacharyya coefficient (dot product of square-rooted histograms). A query
    counts when the gallery holds its pid both in its own camera and in another camera
    (``max_images`` keeps that many of these queries, evenly spaced over the sorted names).
    ``same_camera_rank1``: fraction of queries whose most similar gallery image *among images of
    the query's camera* has the query's pid. ``cross_camera_rank1``: the same among gallery
    images of all *other* cameras. Both are rank-1 over the same queries; a large gap means the
    naive feature matches cameras rather than people (camera bias).
    """
    root = Path(root)
    queries = [q for q in _parse_folder(root / "query") if q[1] > 0]
    gallery = [g for g in _parse_folder(root / "bounding_box_test") if g[1] > 0]
    g_pid = np.array([g[1] for g in gallery])
    g_cam = np.array([g[2] for g in gallery])
    eligible = [
        q
        for q in queries
        if np.any((g_pid == q[1]) & (g_cam == q[2])) and np.any((g_pid == q[1]) & (g_cam != q[2]))
    ]
    if max_images is not None and len(eligible) > max_images:
        keep = np.linspace(0, len(eligible) - 1, max_images).round().astype(int)
        eligible = [eligible[i] for i in keep]
    if not eligible:
        return {
            "same_camera_rank1": float("nan"),
            "cross_camera_rank1": float("nan"),
            "n_queries": 0,
        }
    g_feat = np.sqrt(np.stack([_colour_histogram(g[0]) for g in gallery]))
    q_feat = np.sqrt(np.stack([_colour_histogram(q[0]) for q in eligible]))
    similarity = q_feat @ g_feat.T
    same_hits, cross_hits = 0, 0
    for row, (_, pid, cam) in zip(similarity, eligible, strict=True):
        same = g_cam == cam
        same_hits += int(g_pid[same][np.argmax(row[same])] == pid)
        cross_hits += int(g_pid[~same][np.argmax(row[~same])] == pid)
    n = len(eligible)
    return {
        "same_camera_rank1": same_hits / n,
        "cross_camera_rank1": cross_hits / n,
        "n_queries": n,
    }
