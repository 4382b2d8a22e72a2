"""Writing the benchmark: render every planned image and replace the output folder atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from ccafl.data.datasets import DatasetError
from ccafl.data.marker import MARKER_NAME, replaceable, write_marker
from ccafl.data.synthetic.cameras import sample_cameras
from ccafl.data.synthetic.plan import _render_job, plan_dataset
from ccafl.data.synthetic.rendering import Renderer
from ccafl.data.synthetic.spec import SyntheticSpec
from ccafl.data.synthetic.vocabulary import SPLIT_FOLDERS

# --------------------------------------------------------------------------------------------
# Writing


def _remove_stale_tmp_dirs(root: Path) -> None:
    """Delete leftovers of interrupted runs (tmp dirs whose process is gone, or our own)."""
    for path in root.parent.glob(f"{root.name}.tmp-*"):
        pid_text = path.name.rsplit("-", 1)[-1]
        alive = False
        if pid_text.isdigit() and int(pid_text) != os.getpid():
            try:
                os.kill(int(pid_text), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(path, ignore_errors=True)


def _replace_dir(tmp: Path, root: Path) -> None:
    """Swap tmp in for root; a reader sees either the old dataset, none, or the new one."""
    old = None
    if root.exists() or root.is_symlink():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(root, old)
    os.replace(tmp, root)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def synthesize(root: str | Path, spec: SyntheticSpec, progress: bool = True) -> dict:
    """Render the benchmark under root; return a summary dict (counts per split, seconds).

    Rendering happens in ``<root>.tmp-<pid>`` which is renamed to root at the end, so an
    interrupted run never leaves a complete-looking half dataset. An existing root is replaced
    only if this function created it (`ccafl.data.marker`): a folder of a user's is never
    touched, whatever the config says.
    """
    start = time.perf_counter()
    root = Path(root).absolute()
    if not replaceable(root):
        raise DatasetError(
            f"refusing to write the synthetic benchmark into {root}: that folder exists and was "
            f"not created by ccafl synthesize (no {MARKER_NAME} file in it); point dataset.root "
            "at a new folder under resources/, or set dataset.format to the dataset's real format"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(root)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        rows = _render_all(tmp, spec, progress)
        captions = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
        captions.to_parquet(tmp / "captions.parquet", index=False)
        (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
        write_marker(tmp)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = captions["split"].value_counts()
    person = captions[captions["pid"] > 0]
    return {
        "root": str(root),
        "images": {split: int(counts.get(split, 0)) for split in SPLIT_FOLDERS},
        "identities": {
            split: int(person.loc[person["split"] == split, "pid"].nunique())
            for split in SPLIT_FOLDERS
        },
        "distractors": int((captions["pid"] == 0).sum()),
        "junk": int((captions["pid"] == -1).sum()),
        "cameras": spec.n_cameras,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _render_all(out: Path, spec: SyntheticSpec, progress: bool) -> list[dict]:
    cameras = sample_cameras(spec)
    renderer = Renderer(spec, cameras)
    jobs = plan_dataset(spec, cameras)
    for folder in SPLIT_FOLDERS.values():
        (out / folder).mkdir()
    rows = []
    for job in tqdm(jobs, desc="synthesize", unit="img", disable=not progress):
        image, visible, caption, quality = _render_job(job, renderer, spec.seed)
        rel = f"{SPLIT_FOLDERS[job.split]}/{job.name}"
        Image.fromarray(image).save(out / rel, format="JPEG", quality=quality)
        pid = 0 if job.kind == "distractor" else (-1 if job.kind == "junk" else job.identity.pid)
        rows.append(
            {"path": rel, "split": job.split, "pid": pid, "camera": job.camera, "caption": caption}
            | visible
        )
    return rows
