"""Bad input, case by case (issue 10): one line naming the culprit, and nothing lost.

Every case asserts the exact line the user reads and that the user's dataset folder hashes the
same before and after (names, bytes and modes of every file). Most cases stop while Snakemake
parses the workflow or at a command's start, so a dry run (`snakemake -n`) or one CLI call
shows them; a few run real jobs on a tiny fixture.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def untouched(*roots: Path):
    """Asserts that nothing under ``roots`` (the user's datasets) changed inside the block."""
    before = [tree_digest(root) for root in roots]
    yield
    assert [tree_digest(root) for root in roots] == before, "a dataset folder changed"


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


# --------------------------------------------------------------------------- 2. one line


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `python -m ccafl ...` in this process; return (exit status, its stderr lines)."""
    import signal

    from ccafl.cli import main

    handler = signal.getsignal(signal.SIGTERM)

    def call(*args: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        status = main(list(args))
        return status, capsys.readouterr().err.splitlines()

    yield call
    signal.signal(signal.SIGTERM, handler)


def only_line(status_and_lines: tuple[int, list[str]]) -> str:
    status, lines = status_and_lines
    assert status == 2, lines
    errors = [line for line in lines if line.startswith("ccafl")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    return errors[0]


def custom_tree_with(tmp_path: Path, split: str, edit) -> Path:
    import pandas as pd

    root = build_custom_tree(tmp_path / "cams")
    table = pd.read_csv(root / f"{split}.csv")
    edit(table).to_csv(root / f"{split}.csv", index=False)
    return root


def ics_args(root: Path, out: Path, fmt: str = "custom") -> list[str]:
    return ["ics", "--set", json.dumps({"dataset": {"format": fmt, "root": str(root)}}),
            "--out-dir", str(out)]  # fmt: skip


def test_blank_manifest_cell_names_file_and_line(tmp_path: Path, cli) -> None:
    def blank(table):
        table.loc[3, "camera"] = None
        return table

    root = custom_tree_with(tmp_path, "train", blank)
    before = tree_digest(root)
    line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        f"ccafl ics: error: manifest {root / 'train.csv'} line 5: blank camera; every row "
        "needs path, camera, intra_id"
    )
    assert tree_digest(root) == before and not (tmp_path / "ics").exists()


def test_ill_typed_manifest_cell_names_file_and_line(tmp_path: Path, cli) -> None:
    def text_pid(table):
        table["pid"] = table["pid"].astype(object)
        table.loc[1, "pid"] = "five"
        return table

    root = custom_tree_with(tmp_path, "gallery", text_pid)
    with untouched(root):
        line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        f"ccafl ics: error: manifest {root / 'gallery.csv'} line 3: pid 'five' is not an "
        "integer (person ids are integers; 0 = distractor, -1 = junk)"
    )


def test_duplicated_manifest_path_is_an_error(tmp_path: Path, cli) -> None:
    import pandas as pd

    root = custom_tree_with(tmp_path, "train", lambda t: pd.concat([t, t.iloc[[2]]]))
    with untouched(root):
        line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        f"ccafl ics: error: manifest {root / 'train.csv'} lines 4, 12: image "
        "imgs/entrance_b_0.png is listed more than once; list each image once"
    )


def test_one_image_under_two_cameras_is_an_error(tmp_path: Path, cli) -> None:
    import pandas as pd

    def twice(table):
        extra = table.iloc[[0]].assign(camera="hall", intra_id="z")
        return pd.concat([table, extra])

    root = custom_tree_with(tmp_path, "train", twice)
    with untouched(root):
        line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        f"ccafl ics: error: manifest {root / 'train.csv'} lines 2, 12: image "
        "imgs/entrance_a_0.png is listed under cameras entrance, hall; an image has one camera"
    )
    # ... and across manifests: a query image that the gallery lists under another camera
    root = custom_tree_with(
        tmp_path / "q", "gallery", lambda t: t.assign(path=["test/0.png", "test/3.png"])
    )
    with untouched(root):
        line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        "ccafl ics: error: image test/0.png is listed under two cameras (entrance in "
        f"{root / 'query.csv'}, hall in {root / 'gallery.csv'}); an image has one camera"
    )


def test_no_query_with_a_cross_camera_match_fails_at_ics(tmp_path: Path, cli) -> None:
    root = custom_tree_with(tmp_path, "gallery", lambda t: t.assign(pid=[7, 8]))
    with untouched(root):
        line = only_line(cli(*ics_args(root, tmp_path / "ics")))
    assert line == (
        f"ccafl ics: error: no query of {root} has a gallery image of the same person from "
        "another camera, so evaluation would have nothing to measure; check the person ids "
        "and cameras of the query and gallery splits"
    )
    assert not (tmp_path / "ics").exists()


def test_bad_set_json_is_one_line(tmp_path: Path, cli) -> None:
    line = only_line(cli("ics", "--set", '{"dataset": {format: x}}', "--out-dir", "o"))
    assert line == (
        "ccafl ics: error: --set is not valid JSON (Expecting property name enclosed in "
        "double quotes at column 14): '{\"dataset\": {format: x}}'; write it in single quotes "
        'with double-quoted keys, e.g. --set \'{"train": {"epochs": 5}}\''
    )


def test_config_typo_is_one_line_naming_the_key(tmp_path: Path, cli) -> None:
    line = only_line(cli("ics", "--set", '{"train": {"epochz": 3}}', "--out-dir", "o"))
    assert line == (
        "ccafl ics: error: config key train.epochz is unknown (did you mean 'epochs'?) "
        "(keys: docs/configuration.md)"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n   intra_epochs: 2\n")
    line = only_line(cli("ics", "--config", str(bad), "--out-dir", "o"))
    assert line == f"ccafl ics: error: {bad} line 3: not valid YAML (mapping values are not allowed here)"  # fmt: skip


def test_config_typo_in_the_workflow_is_one_line(user_market) -> None:
    workdir, _ = user_market
    config = default_config()
    config["train"]["epochz"] = 3
    write_config(workdir, config)
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: config key train.epochz is unknown (did you mean 'epochs'?) "
        "(keys: docs/configuration.md)"
    )
    (workdir / "config" / "config.yaml").write_text("train:\n  epochs: 3\n   intra: 2\n")
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: config/config.yaml line 3: not valid YAML (mapping values are not allowed here)"
    )


def test_missing_input_is_one_line(tmp_path: Path, cli) -> None:
    no_clip = json.dumps({"clip": {"model": "ccafl-tiny-rn", "pretrained": None}})
    missing = tmp_path / "nowhere"
    line = only_line(
        cli("prompt", "--set", no_clip, "--ics-dir", str(missing), "--out-dir", str(tmp_path))
    )
    assert line == (
        f"ccafl prompt: error: file not found: {missing / 'train.parquet'} (an input of this "
        "stage: run the stage that writes it, as snakemake does, or correct the path)"
    )


def test_debug_flag_shows_the_traceback(tmp_path: Path, cli) -> None:
    from ccafl.config import ConfigError

    with pytest.raises(ConfigError, match="train.epochz"):
        cli("ics", "--set", '{"train": {"epochz": 3}}', "--out-dir", "o", "--debug")


# --------------------------------------------------------------------------- 3. cross-field


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (
            {"epochs": 16, "adv_start": 40},
            "train.adv_start (40) is after train.epochs (16): ICAL (Eq. 18) would never run; "
            "lower train.adv_start, or set train.losses.ical: false to switch ICAL off",
        ),
        (
            {"epochs": 5, "intra_epochs": 7, "adv_start": 4},
            "train.intra_epochs (7) must be below train.epochs (5): stage 3 (inter-camera "
            "epochs) would not run; raise train.epochs or lower train.intra_epochs",
        ),
        (
            {"epochs": 5, "intra_epochs": 5, "adv_start": 4},
            "train.intra_epochs (5) must be below train.epochs (5): stage 3 (inter-camera "
            "epochs) would not run; raise train.epochs or lower train.intra_epochs",
        ),
        (
            {"epochs": 4, "intra_epochs": 2, "warmup_epochs": 10, "adv_start": 4},
            "train.warmup_epochs (10) is longer than train.epochs (4): the learning rate would "
            "never reach train.lr; lower train.warmup_epochs",
        ),
    ],
)
def test_contradicting_train_keys_are_one_line(tmp_path: Path, train, expected) -> None:
    from ccafl.checks import workflow_config
    from ccafl.config import ConfigError

    with pytest.raises(ConfigError) as error:
        workflow_config(default_config(train=train), tmp_path)
    assert str(error.value) == expected
    if train["epochs"] == 16:  # one case through Snakemake itself: the dry run shows it
        workdir = tmp_path / "work"
        write_config(workdir, default_config(train=train))
        assert error_line(snakemake(workdir, "-n")) == f"ccafl: {expected}"
        assert not (workdir / "resources").exists()


def test_cross_field_rules_apply_to_variants_and_to_the_cli(tmp_path: Path, cli) -> None:
    from ccafl.checks import check_config, config_problems
    from ccafl.config import validate

    config = validate(default_config(train={"losses": {"ical": False}, "adv_start": 99}))
    assert config_problems(config) == []  # ICAL switched off: adv_start does not matter
    workdir = tmp_path / "work"
    config = default_config()
    config["ablation"] = {"seeds": [0], "sweeps": {"late": {"train": {"adv_start": 50}}}}
    write_config(workdir, config)
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: ablation variant late-s0: train.adv_start (50) is after train.epochs (40): "
        "ICAL (Eq. 18) would never run; lower train.adv_start, or set train.losses.ical: "
        "false to switch ICAL off"
    )
    line = only_line(cli("intra", "--set", '{"train": {"adv_start": 90}}', "--ics-dir", "a",
                         "--prompt-dir", "b", "--out-dir", "c"))  # fmt: skip
    assert line == (
        "ccafl intra: error: train.adv_start (90) is after train.epochs (80): ICAL (Eq. 18) "
        "would never run; lower train.adv_start, or set train.losses.ical: false to switch "
        "ICAL off"
    )
    with pytest.raises(ValueError, match="stage 3"):
        check_config(default_config(train={"intra_epochs": 40}))


def test_person_id_loss_without_fixed_labels_is_one_line() -> None:
    """fgdi.id_loss trains a classifier over the stage-3 labels, so they must keep their
    classes from epoch to epoch: the true ids do, the association does not."""
    from ccafl.checks import check_config
    from ccafl.config import ConfigError

    with pytest.raises(ConfigError) as error:
        check_config(default_config(fgdi={"id_loss": 1.0}))
    assert str(error.value) == (
        "fgdi.id_loss (1.0) needs train.labels: supervised, the only labels that keep their "
        "classes from epoch to epoch (train.labels: association renumbers them every epoch); "
        "set fgdi.id_loss: 0 for this run"
    )
    check_config(default_config(fgdi={"id_loss": 1.0}, train={"labels": "supervised"}))


# --------------------------------------------------------------------------- CLIP weights


def test_uncached_hub_tag_is_one_line_at_parse_time(user_market) -> None:
    workdir, _ = user_market
    config = default_config(
        dataset={"format": "market1501", "root": "market"},
        clip={"model": "RN50", "pretrained": "openai"},
    )
    write_config(workdir, config)
    empty_cache = {"HF_HUB_CACHE": str(workdir / "hf-cache"), "HOME": str(workdir)}
    assert error_line(snakemake(workdir, "-n", env=empty_cache)) == (
        "ccafl: clip.pretrained: the open_clip weights RN50/openai are not downloaded on this "
        "machine; run `python -m ccafl fetch-weights --model RN50 --pretrained openai` once "
        "with internet access, or set clip.pretrained to a local weights file"
    )


def test_cached_hub_tag_is_found_without_network(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    from ccafl.checks import weights_problem
    from ccafl.models.weights import cached_hub_weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    clip = {"model": "RN50", "pretrained": "openai"}
    assert "not downloaded" in weights_problem(clip)
    # The Hugging Face cache layout: models--<org>--<name>/{refs/main, snapshots/<sha>/<file>}
    repo = tmp_path / "models--timm--resnet50_clip.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert cached_hub_weights("RN50", "openai") == weights
    assert weights_problem(clip) is None


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        (
            {"pretrained": "weights/RN50.pt"},
            "clip.pretrained: weights file not found: weights/RN50.pt; point it at an existing "
            "checkpoint, or use an open_clip tag such as openai",
        ),
        (
            {"model": "RN50", "pretrained": "opnai"},
            "clip.pretrained: 'opnai' is neither an existing file nor an open_clip tag "
            "(open_clip tags for RN50: openai, yfcc15m, cc12m)",
        ),
        (
            {"model": "RN-50", "pretrained": "openai"},
            "clip.model: unknown CLIP model 'RN-50' (did you mean RN50, RN50x4, RN50x64?)",
        ),
    ],
)
def test_unresolvable_weights_are_one_line(tmp_path: Path, clip, expected) -> None:
    from ccafl.checks import weights_problem

    assert weights_problem({"model": "ccafl-tiny-rn", **clip}, tmp_path) == expected


def test_missing_local_weights_fail_the_dry_run(user_market) -> None:
    workdir, _ = user_market
    config = default_config(
        dataset={"format": "market1501", "root": "market"},
        clip={"pretrained": "weights/RN50.pt"},
    )
    write_config(workdir, config)
    assert error_line(snakemake(workdir, "-n")) == (
        "ccafl: clip.pretrained: weights file not found: weights/RN50.pt; point it at an "
        "existing checkpoint, or use an open_clip tag such as openai"
    )


def test_uncached_hub_tag_in_a_stage_is_one_line(tmp_path: Path, cli, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    rn50 = json.dumps({"clip": {"model": "RN50", "pretrained": "openai"}})
    line = only_line(cli("evaluate", "--set", rn50, "--ics-dir", "x", "--out-dir", "y"))
    assert line == (
        "ccafl evaluate: error: clip.pretrained: the open_clip weights RN50/openai are not "
        "downloaded on this machine; run `python -m ccafl fetch-weights --model RN50 "
        "--pretrained openai` once with internet access, or set clip.pretrained to a local "
        "weights file"
    )


def test_maintenance_commands_skip_the_file_checks(user_market) -> None:
    workdir, _ = user_market
    write_config(workdir, default_config(dataset={"format": "market1501", "root": "nowhere"}))
    result = snakemake(workdir, "--unlock")
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------- checkpoints


def small_checkpoint(path: Path, epoch: int) -> Path:
    from ccafl.training.common import save_checkpoint

    save_checkpoint(path, epoch=epoch, model={"w": __import__("torch").zeros(3)}, config={})
    return path


def test_corrupt_checkpoint_is_one_line_naming_file_and_fix(tmp_path: Path, cli) -> None:
    folder = tmp_path / "results" / "tiny" / "inter" / "epoch_004"
    checkpoint = small_checkpoint(folder / "checkpoint.pt", 4)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    out = tmp_path / "model.pt"
    line = only_line(cli("final", "--checkpoint", str(checkpoint), "--out", str(out)))
    assert line == (
        f"ccafl final: error: checkpoint {checkpoint} is corrupt or truncated (File is not a "
        f"zip file); delete {folder}/ and rerun snakemake to recompute it and what follows "
        "(after a killed run, `snakemake --unlock` first)"
    )
    checkpoint.write_bytes(b"not a checkpoint at all")
    line = only_line(cli("final", "--checkpoint", str(checkpoint), "--out", str(out)))
    assert "is corrupt or truncated (File is not a zip file)" in line
    assert not out.exists()


def test_checkpoint_of_the_wrong_epoch_is_refused_before_training(tmp_path: Path, cli) -> None:
    checkpoint = small_checkpoint(tmp_path / "results" / "x" / "intra" / "checkpoint.pt", 2)
    args = ["--ics-dir", "a", "--prompt-dir", "b", "--out-dir", str(tmp_path / "o")]
    line = only_line(cli("inter-epoch", "--epoch", "5", "--previous", str(checkpoint), *args))
    assert line == (
        f"ccafl inter-epoch: error: checkpoint {checkpoint} holds epoch 2, not epoch 4 as "
        f"this stage needs; pass the checkpoint of epoch 4, or delete {checkpoint.parent}/ "
        "and rerun snakemake to recompute it and what follows (after a killed run, "
        "`snakemake --unlock` first)"
    )


def test_checkpoint_header_and_old_checkpoints(tmp_path: Path) -> None:
    import torch

    from ccafl.errors import CheckpointError
    from ccafl.inference.checkpoints import CHECKPOINT_VERSION, config_digest, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    config = {"train": {"epochs": 3}}
    from ccafl.training.common import save_checkpoint

    save_checkpoint(path, epoch=3, model={}, config=config)
    header = load_checkpoint(path, epoch=3)["header"]
    assert header == {
        "format": "ccafl-checkpoint",
        "version": CHECKPOINT_VERSION,
        "epoch": 3,
        "config_digest": config_digest(config),
    }
    # written before the header existed: the keys the training code reads, no header
    old = {"model": {}, "epoch": 3, "config": config, "rng": {}, "rng_per_rank": []}
    torch.save(old, path)
    assert load_checkpoint(path)["epoch"] == 3
    torch.save({**old, "header": {**header, "version": CHECKPOINT_VERSION + 1}}, path)
    with pytest.raises(CheckpointError, match="format version 2, this ccafl reads up to 1"):
        load_checkpoint(path)
    torch.save({"weights": {}}, path)
    with pytest.raises(CheckpointError, match="is not a ccafl checkpoint"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- 7. corrupt epoch


def test_corrupt_epoch_checkpoint_stops_the_dag_before_anything_is_deleted(
    tmp_path: Path,
) -> None:
    """Without the check, Snakemake deleted epoch 4's valid outputs, then epoch 4 failed."""
    workdir = tmp_path / "work"
    ignore = shutil.ignore_patterns("*.py", "__pycache__")
    shutil.copytree(REPO / "tests" / "e2e", workdir / "config", ignore=ignore)
    results = workdir / "results" / "tiny"
    epoch3 = small_checkpoint(results / "inter" / "epoch_003" / "checkpoint.pt", 3)
    epoch3.write_bytes(epoch3.read_bytes()[:-200])
    epoch4 = results / "inter" / "epoch_004"
    epoch4.mkdir(parents=True)
    for name in ("checkpoint.pt", "graph.parquet", "labels.parquet", "log.parquet"):
        (epoch4 / name).write_text("an output of the previous run")
    before = tree_digest(results)
    assert error_line(snakemake(workdir)) == (
        f"ccafl: checkpoint {epoch3.relative_to(workdir)} is corrupt or truncated (File is "
        f"not a zip file); delete {epoch3.parent.relative_to(workdir)}/ and rerun snakemake to "
        "recompute it and what follows (after a killed run, `snakemake --unlock` first)"
    )
    assert tree_digest(results) == before


# --------------------------------------------------------------------------- 5. atomic writes


def test_artifacts_respect_the_umask(tmp_path: Path) -> None:
    from ccafl.io import write_json

    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "open.json")
        os.umask(0o077)
        write_json({"a": 1}, tmp_path / "private.json")
    finally:
        os.umask(old)
    assert (tmp_path / "open.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    from ccafl.io import write_text

    target = tmp_path / "checkpoint.pt"
    with pytest.raises(ZeroDivisionError):
        from ccafl.io import _write_with

        _write_with(target, lambda tmp: (tmp.write_text("half"), 1 / 0))
    assert list(tmp_path.iterdir()) == []
    write_text("whole", target)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_killed_writer_leaves_nothing_on_sigterm_and_leftovers_go_next_time(
    tmp_path: Path,
) -> None:
    import signal
    import time

    from ccafl.io import write_text

    target = tmp_path / "checkpoint.pt"
    script = (
        "import signal, sys, time\n"
        "from ccafl.cli import _exit_on_sigterm\n"
        "from ccafl.io import atomic_path\n"
        "signal.signal(signal.SIGTERM, _exit_on_sigterm)\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline().strip() == b"writing"
    assert len(list(tmp_path.glob(".checkpoint.pt.*.tmp"))) == 1
    writer.send_signal(signal.SIGTERM)
    assert writer.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    # SIGKILL cannot be caught: its leftover goes with the next write of the same artifact
    # (kept while its writer is alive or it is newer than this process).
    stale = tmp_path / ".checkpoint.pt.999999999.a1b2c3d4.tmp"
    older = tmp_path / ".checkpoint.pt.k2j4h5l3.tmp"  # the old mkstemp naming
    fresh = tmp_path / f".checkpoint.pt.{os.getpid() + 1}.0000.tmp"
    for leftover in (stale, older, fresh):
        leftover.write_text("half")
    an_hour_ago = time.time() - 3600
    for leftover in (stale, older):
        os.utime(leftover, (an_hour_ago, an_hour_ago))
    write_text("whole", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.pt", fresh.name])


# --------------------------------------------------------------------------- 6. truthful logs


def test_weights_log_says_what_was_loaded(tmp_path: Path, caplog) -> None:
    import logging

    import torch

    from ccafl.config import validate
    from ccafl.models.factory import build_clip
    from ccafl.settings import Settings

    def settings(clip: dict) -> Settings:
        return Settings.from_config(validate({"clip": clip}))

    tiny = settings({"model": "ccafl-tiny-rn", "pretrained": None})
    with caplog.at_level(logging.INFO):
        clip = build_clip(tiny.clip, tiny.input.size)
    assert "CLIP ccafl-tiny-rn: random initialisation (clip.pretrained: null)" in caplog.text
    weights = tmp_path / "clip.pt"
    torch.save({"model": clip.state_dict()}, weights)
    local = settings({"model": "ccafl-tiny-rn", "pretrained": str(weights)})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        build_clip(local.clip, local.input.size)
        build_clip(local.clip, local.input.size, weights=False)
    assert "initialized randomly" not in caplog.text
    assert f"CLIP ccafl-tiny-rn: weights from local file {weights}" in caplog.text
    assert "architecture only (its weights are loaded from a checkpoint next)" in caplog.text


def test_no_faiss_loader_noise(tmp_path: Path) -> None:
    code = "from ccafl.logs import setup_logging; setup_logging('x', False, None); import faiss"
    result = run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0 and "faiss.loader" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- real jobs


def test_ics_warnings_and_errors_reach_the_terminal(tmp_path: Path) -> None:
    """The ics job runs (a real Snakemake job): its warning is on Snakemake's stderr, and
    an error in the next run is its one line there too; the datasets are untouched."""
    from conftest import write_image

    workdir = tmp_path / "work"
    market = build_market_tree(workdir / "market")
    write_image(market / "bounding_box_train" / "0030_c4s1_000001_00.jpg")
    custom = build_custom_tree(workdir / "cams")
    blank = (
        (custom / "train.csv").read_text().replace("imgs/hall_x_1.png,hall", "imgs/hall_x_1.png,")
    )
    (custom / "train.csv").write_text(blank)
    before = tree_digest(market), tree_digest(custom)
    (workdir / "clip.pt").write_bytes(b"")
    datasets = {"m": ("market1501", "market"), "c": ("custom", "cams")}
    for name, (fmt, root) in datasets.items():
        dataset = {"name": name, "format": fmt, "root": root}
        write_config(workdir, default_config(dataset=dataset, clip={"pretrained": "clip.pt"}))
        result = snakemake(workdir, f"results/{name}/ics/summary.json")
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        if name == "m":
            assert result.returncode == 0, result.stderr[-3000:]
            assert (
                "ccafl ics: WARNING: camera c4 has 1 training identity: intra-camera learning "
                "has no negatives there; keeping it"
            ) in result.stderr.splitlines()
        else:
            assert result.returncode != 0
            assert (
                "ccafl ics: error: manifest cams/train.csv line 9: blank camera; "
                "every row needs path, camera, intra_id"
            ) in result.stderr.splitlines()
    assert (tree_digest(market), tree_digest(custom)) == before


def test_unreadable_images_and_unlearnable_splits_are_one_line(tmp_path: Path, cli) -> None:
    market = build_market_tree(tmp_path / "market")
    broken = sorted((market / "query").iterdir())
    for image in broken:
        image.write_bytes(b"not a jpeg")
    with untouched(market):
        line = only_line(cli(*ics_args(market, tmp_path / "ics", "market1501")))
    assert line.startswith(f"ccafl ics: error: 2 unreadable image(s): {broken[0]} (")
    assert line.endswith("; replace or remove them (the log lists them all)")
    single = build_market_tree(tmp_path / "single")
    for pid in ("0002", "0007", "0009"):  # keep only pid 11: one identity in each camera
        for image in (single / "bounding_box_train").glob(f"{pid}_*"):
            image.unlink()
    with untouched(single):
        line = only_line(cli(*ics_args(single, tmp_path / "ics", "market1501")))
    assert line == (
        f"ccafl ics: error: no camera of {single} has two or more training identities: "
        "intra-camera learning would have nothing to contrast; check the training split's "
        "labels"
    )


def test_fetch_weights_uses_the_cache_and_names_unknown_tags(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub
    from open_clip import pretrained

    from ccafl.errors import WeightsError
    from ccafl.models.weights import fetch_hub_weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="RN50/opnai is not an open_clip pretrained tag"):
        fetch_hub_weights("RN50", "opnai")
    repo = tmp_path / "models--timm--resnet50_clip.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")

    def no_network(*args, **kwargs):
        raise AssertionError("cached weights must not be downloaded again")

    monkeypatch.setattr(pretrained, "download_pretrained", no_network)
    assert fetch_hub_weights("RN50", "openai") == weights


def test_a_wrong_supervised_labels_table_is_one_line_naming_it(tmp_path: Path) -> None:
    import pandas as pd

    from ccafl.association.pseudo_labels import read_given_labels
    from ccafl.cli import user_error_line
    from ccafl.errors import UserError

    short = tmp_path / "short.parquet"
    pd.DataFrame({"gid": [0, 1], "cluster": [0, 0]}).to_parquet(short)
    with pytest.raises(UserError) as error:
        read_given_labels(short, n_gids=3)
    line = user_error_line(error.value)
    assert str(short) in line and "0..2" in line and "supervised_labels" in line
    assert "\n" not in line
    unnamed = tmp_path / "unnamed.parquet"
    pd.DataFrame({"gid": [0, 1, 2], "label": [0, 0, 1]}).to_parquet(unnamed)
    with pytest.raises(UserError, match="missing cluster"):
        read_given_labels(unnamed, n_gids=3)
    assert read_given_labels(short, n_gids=2).tolist() == [0, 0]
