"""CALR's Fig. 5 plot (rule calr_clusters_plot) from hand-made stage-B metrics.json files: the
drawn series are the files' numbers, the file is a PNG, and a missing key is one line naming
the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccafl import cli
from ccafl.report.plots import CALR_PANELS, plot_calr_clusters
from ccafl.report.tables import CALR_CLUSTER_MEASURES, CALR_CLUSTER_SETS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = (3, 4, 5)


def _value(epoch: int, name: str, measure: str) -> float:
    """A distinct number per epoch, set and measure, so a swapped series cannot pass."""
    i, j = CALR_CLUSTER_SETS.index(name), CALR_CLUSTER_MEASURES.index(measure)
    return round(0.05 + 0.1 * i + 0.03 * j + 0.01 * epoch, 4) * (3 if measure == "expansion" else 1)


def _epoch_metrics(tmp_path: Path, drop: str | None = None, measured: bool = True) -> dict:
    files = {}
    for epoch in EPOCHS:
        metrics = {"epoch": epoch, "n_clusters": 10 - epoch, "n_trained_images": 40}
        if measured:
            metrics |= {
                f"clusters_{name}_{measure}": _value(epoch, name, measure)
                for name in CALR_CLUSTER_SETS
                for measure in CALR_CLUSTER_MEASURES
            }
            metrics["clusters_refined_n"] = 40.0
        if drop is not None and epoch == EPOCHS[-1]:
            del metrics[drop]
        path = tmp_path / "inter" / f"epoch_{epoch:03d}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(metrics))
        files[epoch] = path
    return files


def _args(files: dict, out: Path) -> list[str]:
    epochs = [arg for epoch, path in files.items() for arg in ("--epoch", str(epoch), str(path))]
    return ["calr-clusters-plot", *epochs, "--out", str(out)]


def test_every_series_is_the_metrics_files_numbers(tmp_path: Path) -> None:
    out = tmp_path / "report" / "calr_clusters.png"
    figure = plot_calr_clusters(_epoch_metrics(tmp_path), out)
    panels = {ax.get_title(): ax for ax in figure.axes}
    drawn = 0
    for title, _, measures in CALR_PANELS:
        lines = {line.get_gid(): line for line in panels[title].get_lines() if line.get_gid()}
        expected = {f"clusters_{n}_{m}" for n in CALR_CLUSTER_SETS for m in measures}
        assert set(lines) == expected, title
        for gid, line in lines.items():
            name, measure = gid.removeprefix("clusters_").split("_", 1)
            np.testing.assert_array_equal(line.get_xdata(), EPOCHS)
            want = [_value(epoch, name, measure) for epoch in EPOCHS]
            np.testing.assert_allclose(line.get_ydata(), want, rtol=0, atol=1e-12, err_msg=gid)
            drawn += 1
    # Fig. 5: F-score twice (pairwise, BCubed), precision and recall of both, expansion; x 3 sets.
    assert drawn == 3 * (1 + 1 + 2 + 2 + 1)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        assert image.size[0] > 600 and image.size[1] > 300


def test_the_command_writes_the_plot(tmp_path: Path) -> None:
    out = tmp_path / "report" / "calr_clusters.png"
    assert cli.main(_args(_epoch_metrics(tmp_path), out)) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("key", ["clusters_refined_bcubed_f_score", "clusters_local_expansion"])
def test_a_missing_key_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture, key: str
) -> None:
    files = _epoch_metrics(tmp_path, drop=key)
    out = tmp_path / "report" / "calr_clusters.png"
    assert cli.main(_args(files, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(files[EPOCHS[-1]]) in lines[0] and key in lines[0]
    assert not out.exists()


def test_no_training_truth_gives_a_placeholder(tmp_path: Path) -> None:
    """Custom data has no truth table, so no epoch measured its clusters: the declared output
    is a small image that says why, not a failed job."""
    out = tmp_path / "calr_clusters.png"
    assert cli.main(_args(_epoch_metrics(tmp_path, measured=False), out)) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        assert image.size[1] < 300  # the placeholder, not the 2 x 3 panels
