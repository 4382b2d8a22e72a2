"""Bad input, case by case (issue 10): one line naming the culprit, and nothing lost.

Every case asserts the exact line the user reads and that the user's dataset folder hashes the
same before and after (names, bytes and modes of every file). Most cases stop while Snakemake
parses the workflow or at a command's start, so a dry run (`snakemake -n`) or one CLI call
shows them; a few run real jobs on a tiny fixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import build_custom_tree, build_market_tree

REPO = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> str:
    """Names, modes and bytes of everything under ``root`` (a missing root hashes too)."""
    digest = hashlib.sha256()
    if not root.exists():
        return "missing"
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run(command: list[str], workdir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, env=environment, timeout=600
    )


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    snakefile = str(REPO / "workflow" / "Snakefile")
    command = [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--cores", "1"]
    return run([*command, "--directory", str(workdir), *args], workdir, env)


def ccafl(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "ccafl", *args], workdir, env)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line that reports the error: the only ``ccafl`` line, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("ccafl")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def default_config(**sections: dict) -> dict:
    """config/config.yaml as shipped (clip.pretrained: captions), with sections replaced."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, section in sections.items():
        config[name] = {**config.get(name, {}), **section}
    return config


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def user_market(tmp_path: Path):
    """A working directory with a user's Market-1501 folder in it; checks it is untouched."""
    workdir = tmp_path / "work"
    market = build_market_tree(workdir / "market")
    before = tree_digest(market)
    yield workdir, market
    assert tree_digest(market) == before, "the user's dataset folder changed"


# --------------------------------------------------------------------------- 1. data loss


@pytest.mark.parametrize("dry_run", [True, False])
def test_real_dataset_with_caption_clip_is_a_config_error(user_market, dry_run: bool) -> None:
    workdir, _ = user_market
    write_config(workdir, default_config(dataset={"format": "market1501", "root": "market"}))
    result = snakemake(workdir, *(["-n"] if dry_run else []))
    assert error_line(result) == (
        "ccafl: clip.pretrained: captions pretrains CLIP on the synthetic benchmark's "
        "captions, which dataset.format: market1501 does not have; set clip.pretrained to an "
        "open_clip tag (openai) or a local weights file"
    )
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()


def test_missing_real_dataset_root_is_an_error_not_synthesised(user_market) -> None:
    workdir, _ = user_market
    weights = workdir / "clip.pt"
    weights.write_bytes(b"")  # exists: the weights check passes, the root check speaks
    config = default_config(
        dataset={"format": "market1501", "root": "Market-1501-v15.09.15"},
        clip={"pretrained": str(weights)},
        train={"epochs": 16},
    )
    write_config(workdir, config)
    assert error_line(snakemake(workdir)) == (
        "ccafl: dataset.root: folder not found: Market-1501-v15.09.15 (dataset.format: "
        "market1501 reads an existing dataset; nothing is generated for it: download the "
        "dataset and point dataset.root at it)"
    )
    assert not (workdir / "Market-1501-v15.09.15").exists()


def test_real_dataset_without_its_folders_is_named(user_market) -> None:
    workdir, market = user_market
    weights = workdir / "clip.pt"
    weights.write_bytes(b"")
    config = default_config(
        dataset={"format": "market1501", "root": "market/query"}, clip={"pretrained": "clip.pt"}
    )
    write_config(workdir, config)
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: dataset.root (market/query) does not have the market1501 layout: dataset "
        f"folder not found: {market / 'query' / 'bounding_box_train'}"
    )


def test_synthetic_format_over_a_user_folder_is_refused(user_market) -> None:
    workdir, market = user_market
    copy = workdir / "resources" / "market"
    shutil.copytree(market, copy)
    before = tree_digest(copy)
    write_config(workdir, default_config(dataset={"format": "synthetic", "root": str(copy)}))
    assert error_line(snakemake(workdir)) == (
        f"ccafl: dataset.root ({copy}) exists but was not created by ccafl synthesize (no "
        ".ccafl-synthetic file), and dataset.format: synthetic would replace it; move that "
        "folder away, or point dataset.root at a new folder"
    )
    assert tree_digest(copy) == before


def test_synthetic_benchmark_only_below_resources(user_market) -> None:
    workdir, _ = user_market
    write_config(workdir, default_config(dataset={"format": "synthetic", "root": "market"}))
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: dataset.root (market): the synthetic benchmark is written only below "
        "resources/ of the working directory, never elsewhere; set dataset.root to "
        "resources/<name> (or dataset.format to the real format of that folder)"
    )


def test_synthesize_never_replaces_a_folder_it_did_not_create(user_market) -> None:
    from ccafl.data.datasets import DatasetError
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    _, market = user_market
    spec = SyntheticSpec(n_train_ids=2, n_test_ids=2, n_pretrain_ids=0, n_distractors=0)
    with pytest.raises(DatasetError, match="refusing to write the synthetic benchmark into"):
        synthesize(market, spec, progress=False)


def test_synthesize_command_refuses_real_formats_and_user_folders(user_market) -> None:
    workdir, market = user_market
    real = json.dumps({"dataset": {"format": "market1501", "root": "market"}})
    assert error_line(ccafl(workdir, "synthesize", "--set", real)) == (
        "ccafl synthesize: error: dataset.format is market1501: synthesize writes only the "
        "synthetic benchmark (dataset.format: synthetic), never into a real dataset's root"
    )
    synthetic = json.dumps({"dataset": {"format": "synthetic", "root": "market"}})
    assert error_line(ccafl(workdir, "synthesize", "--set", synthetic)) == (
        f"ccafl synthesize: error: refusing to write the synthetic benchmark into {market}: "
        "that folder exists and was not created by ccafl synthesize (no .ccafl-synthetic file "
        "in it); point dataset.root at a new folder under resources/, or set dataset.format "
        "to the dataset's real format"
    )


def test_an_older_unmarked_benchmark_is_still_replaced(tmp_path: Path) -> None:
    from ccafl.data.marker import MARKER_NAME, replaceable
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    root = tmp_path / "resources" / "synthetic"
    spec = SyntheticSpec(n_train_ids=2, n_test_ids=2, n_pretrain_ids=1, n_distractors=0)
    synthesize(root, spec, progress=False)
    assert (root / MARKER_NAME).is_file()
    (root / MARKER_NAME).unlink()  # as written before the marker existed
    (root / "spec.json").unlink()  # Snakemake deletes a rule's outputs before rerunning it
    assert replaceable(root)
    synthesize(root, spec, progress=False)
    (root / "notes.txt").write_text("mine")  # a folder with anything else is no longer ours
    (root / MARKER_NAME).unlink()
    assert not replaceable(root)


def test_custom_fixture_is_unchanged_by_a_dry_run(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    custom = build_custom_tree(workdir / "cams")
    before = tree_digest(custom)
    (workdir / "clip.pt").write_bytes(b"")
    config = default_config(
        dataset={"format": "custom", "root": "cams"}, clip={"pretrained": "clip.pt"}
    )
    write_config(workdir, config)
    result = snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert tree_digest(custom) == before
