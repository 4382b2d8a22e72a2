"""The workflow passes `snakemake --lint` (software per rule, launchers and folders through
params) and is formatted as snakefmt writes it (`make lint` runs both)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    done = subprocess.run(
        [str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations" in done.stdout + done.stderr


def test_workflow_is_snakefmt_formatted():
    snakefmt = BIN / "snakefmt"
    if not snakefmt.exists() and shutil.which("snakefmt") is None:
        pytest.skip("snakefmt is not installed (it comes with `pip install -e .[test]`)")
    command = str(snakefmt) if snakefmt.exists() else "snakefmt"
    done = subprocess.run(
        [command, "--check", "workflow"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_launcher_param_is_not_recorded_for_reruns():
    """How a job is started changes no number: its param must be invisible to the rerun check
    (Snakemake records only plain-typed params), while printing as the command."""
    from snakemake.persistence import UNREPRESENTABLE, Persistence

    source = (REPO / "workflow" / "rules" / "common.smk").read_text()
    start = source.index("class Launcher:")
    end = source.index("\n\n\n", start)
    namespace: dict = {}
    exec(source[start:end], namespace)
    launcher = namespace["Launcher"]("python -m ccafl")
    assert f"{launcher} intra" == "python -m ccafl intra"
    assert Persistence._serialize_param_builtin(None, launcher) is UNREPRESENTABLE
    assert Persistence._serialize_param_builtin(None, "python -m ccafl") is not UNREPRESENTABLE
