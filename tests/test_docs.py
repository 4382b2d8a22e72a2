"""The documentation: the site builds with no warning (broken links and anchors are errors),
the README stays a page whose links resolve, and the demo's stated range is the measured one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccafl.report.expected import spreads, summary_lines

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SPREAD = REPO / "docs" / "demo-spread.json"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_site_builds_with_no_warning(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-3000:]}"
    assert (tmp_path / "results" / "index.html").is_file()


def test_mkdocs_catches_a_broken_link(tmp_path):
    """The strict build is what CI relies on: it must fail on a link to a missing page."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md) [anchor](#no-such-heading)\n")
    config = (REPO / "mkdocs.yml").read_text().split("nav:")[0]
    config += "validation:\n  unrecognized_links: warn\n  anchors: warn\n"
    (tmp_path / "mkdocs.yml").write_text(config)
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "missing.md" in done.stderr and "no-such-heading" in done.stderr


def _anchors(markdown: str) -> set[str]:
    """GitHub's and mkdocs' heading anchors (lower case, punctuation dropped, spaces to -)."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


def test_readme_is_a_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "README.md is over 250 lines: move detail to docs/"
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (README.parent / path) if path else README
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            broken.append(target)
    assert not broken, f"README.md links to what does not exist: {broken}"


def _measured():
    return json.loads(SPREAD.read_text())


def test_the_stated_demo_range_is_the_measured_one():
    """README and docs/results.md state the demo's mean ± std from docs/demo-spread.json."""
    measured = _measured()
    for model in ("ccafl", "zeroshot"):
        spread = spreads(measured, model)["mAP"]
        stated = f"{spread.mean:.1f} ± {spread.std:.1f}"
        for page in (README, REPO / "docs" / "results.md"):
            assert stated in page.read_text(), f"{page.name} does not state {model} mAP {stated}"
        expected = f"{spread.low:.1f}-{spread.high:.1f}"
        assert expected in README.read_text(), f"README does not state {model} range {expected}"


@pytest.mark.parametrize("shift, inside", [(0.0, True), (-0.5, False)])
def test_summary_puts_a_run_beside_its_range(shift, inside):
    measured = _measured()
    runs = measured["runs"]
    metrics = {k: v + shift for k, v in runs[0]["ccafl"].items()}
    lines = summary_lines(metrics, runs[0]["zeroshot"], measured)
    text = "\n".join(lines)
    assert f"{100 * metrics['mAP']:6.1f}" in lines[1]
    assert ("within the expected range" in text) is inside
    assert ("outside the measured range" in lines[1]) is not inside
