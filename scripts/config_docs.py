"""Regenerate the key tables of docs/configuration.md from workflow/schemas/config.schema.yaml.

The prose around the tables is kept; only each section's table is rewritten, so a key added
to the schema cannot be missing from the documentation. `--check` exits 1 when the page is
out of date (tests/test_config_docs.py runs it).

    python scripts/config_docs.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "docs" / "configuration.md"


def _type(spec: dict) -> str:
    if "enum" in spec:
        return " / ".join(
            "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for v in spec["enum"]
        )
    kind = spec.get("type", "")
    if isinstance(kind, list):
        return " or ".join(k for k in kind)
    return kind


def _default(spec: dict) -> str:
    if "default" not in spec:
        return ""
    value = spec["default"]
    if isinstance(value, dict) and len(json.dumps(value)) > 40:
        return "see schema"
    return f"`{json.dumps(value)}`"


def table(section: dict) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, spec in section.get("properties", {}).items():
        meaning = " ".join(str(spec.get("description", "")).split())
        rows.append(f"| `{key}` | {_type(spec)} | {_default(spec)} | {meaning} |")
    return rows


def render(text: str, schema: dict) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    current = None
    while i < len(lines):
        line = lines[i]
        header = re.fullmatch(r"## `(\w+)`", line)
        if header:
            current = header[1]
        if current in schema["properties"] and line.startswith("| key |"):
            out.extend(table(schema["properties"][current]))
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            current = None
            continue
        out.append(line)
        i += 1
    missing = [s for s in schema["properties"] if f"## `{s}`" not in text]
    if missing:
        raise SystemExit(
            f"docs/configuration.md has no section for {missing}: add '## `name`' and a table"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args()
    schema = yaml.safe_load(SCHEMA.read_text())
    text = README.read_text()
    new = render(text, schema)
    if args.check:
        if new != text:
            print("docs/configuration.md is out of date: run python scripts/config_docs.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
