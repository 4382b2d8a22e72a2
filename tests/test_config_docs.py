"""docs/configuration.md documents every key of the schema (scripts/config_docs.py keeps it so)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_is_generated_from_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
