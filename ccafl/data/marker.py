"""Which dataset folders ccafl itself created, and may therefore replace.

`ccafl.data.synthetic.synthesize` replaces its output folder when the benchmark's config
changes. It must never do that to a folder a user made (a real dataset pointed at by mistake),
so every folder it writes carries a marker file, and only a marked folder (or an empty one) is
ever replaced. Kept free of heavy imports: the workflow checks it while it is parsed.
"""

from __future__ import annotations

from pathlib import Path

MARKER_NAME = ".ccafl-synthetic"
MARKER_TEXT = (
    "This folder was rendered by `python -m ccafl synthesize` (the synthetic benchmark).\n"
    "ccafl replaces it whenever the `synthetic` config changes; keep nothing else here.\n"
)
# What synthesize wrote before the marker existed: exactly these entries (the two files may be
# missing: Snakemake deletes a rule's outputs before it reruns the rule). A real dataset never
# has a `pretrain/` folder next to the Market-1501 folders.
_LEGACY_FOLDERS = {"bounding_box_train", "query", "bounding_box_test", "pretrain"}
_LEGACY_FILES = {"captions.parquet", "spec.json"}


def write_marker(folder: Path) -> None:
    (folder / MARKER_NAME).write_text(MARKER_TEXT)


def created_by_synthesize(folder: str | Path) -> bool:
    """True if ``folder`` holds a marker, or is an unmarked benchmark of an older ccafl."""
    folder = Path(folder)
    if (folder / MARKER_NAME).is_file():
        return True
    if not folder.is_dir():
        return False
    names = {entry.name for entry in folder.iterdir()}
    return _LEGACY_FOLDERS <= names and names <= _LEGACY_FOLDERS | _LEGACY_FILES


def replaceable(folder: str | Path) -> bool:
    """May synthesize put its benchmark at ``folder``? Missing, empty or created by it."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return True
    if folder.is_dir() and not any(folder.iterdir()):
        return True
    return created_by_synthesize(folder)
