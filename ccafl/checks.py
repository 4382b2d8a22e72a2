"""One validation pass over a config before any job runs: `snakemake -n` already shows it.

The Snakefile calls `workflow_config_or_exit` while it is parsed, and `python -m ccafl` runs
`check_config` on the config of every command, so the two agree on what a bad config is. Every
problem is one line naming the key (or file) and what to do; nothing here writes anything.

Checked:

* the schema (`ccafl.config.validate`): types, ranges, unknown keys with a "did you mean";
* cross-field rules the schema cannot say (`config_problems`): stage 3 must exist
  (``train.intra_epochs < train.epochs``), ICAL must be reachable (``train.adv_start <=
  train.epochs`` when ``train.losses.ical``), the warm-up must end, ``clip.pretrained:
  captions`` needs the synthetic benchmark, and the synthetic spec must be renderable; for the
  main run and every ablation variant and sweep;
* the dataset root (`dataset_problem`): a real dataset must exist with its folders; the
  synthetic benchmark is written only below ``resources/`` and never over a folder that
  ccafl did not create (`ccafl.data.marker`);
* the CLIP weights (`weights_problem`): a local file exists, an open_clip hub tag is in the
  local cache (looked up without network access; `python -m ccafl fetch-weights` fills it).

Kept light: importing this module imports no torch; open_clip is imported only to look up a
hub tag or a model name that the project does not ship.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

from ccafl.config import ConfigError, read_config_file, validate
from ccafl.errors import UserError, WeightsError
from ccafl.models.weights import IMAGE_ONLY_MODELS, is_image_only

# Snakemake commands that only tidy up the working directory: they parse the Snakefile too, and
# must work whatever state the dataset or the weights are in (above all `--unlock`).
MAINTENANCE_FLAGS = {
    "--unlock",
    "--cleanup-metadata",
    "--cm",
    "--cleanup-shadow",
    "--list-rules",
    "--list",
    "-l",
    "--list-target-rules",
    "--lt",
    "--lint",
    "--delete-all-output",
    "--delete-temp-output",
    "--summary",
    "-S",
    "--detailed-summary",
    "-D",
    "--list-changes",
    "--lc",
}
WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt"}
SHIPPED_CLIP_CONFIGS = Path(__file__).resolve().parents[1] / "config" / "clip"


# --------------------------------------------------------------------------- cross-field rules


def _has_key(tree: dict, key: str) -> bool:
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def config_problems(config: dict, given: dict | None = None) -> list[str]:
    """What a schema-valid config contradicts itself in, one clause per problem.

    ``given``: when a Snakemake rule calls a stage (``--stage-keys``), the keys it passed, and
    a rule is checked only when every key it reads is among them; None (the workflow, a stage
    run by hand): every rule. Why: a rule passes its stage only the keys the stage reads (so
    that no other key reruns it); the rest take their defaults there, and comparing those with
    the given keys would fail a valid run. The workflow checked every run's whole config at
    parse time, before any job started.
    """

    def checked(*keys: str) -> bool:
        return given is None or all(_has_key(given, key) for key in keys)

    problems = []
    dataset, clip, train = config["dataset"], config["clip"], config["train"]
    if checked(
        "dataset.format", "dg.sources", "dg.targets", "dg.domains", "synthetic", "clip.pretrained"
    ):
        problems += dg_problems(config)
    if (
        checked("clip.pretrained", "dataset.format")
        and clip["pretrained"] == "captions"
        and dataset["format"] not in ("synthetic", "pooled")
    ):
        problems.append(
            f"clip.pretrained: captions pretrains CLIP on the synthetic benchmark's captions, "
            f"which dataset.format: {dataset['format']} does not have; set clip.pretrained to an "
            "open_clip tag (openai) or a local weights file"
        )
    if checked("train.intra_epochs", "train.epochs") and train["intra_epochs"] >= train["epochs"]:
        problems.append(
            f"train.intra_epochs ({train['intra_epochs']}) must be below train.epochs "
            f"({train['epochs']}): stage 3 (inter-camera epochs) would not run; raise "
            "train.epochs or lower train.intra_epochs"
        )
    if (
        checked("train.losses.ical", "train.adv_start", "train.epochs")
        and train["losses"]["ical"]
        and train["adv_start"] > train["epochs"]
    ):
        problems.append(
            f"train.adv_start ({train['adv_start']}) is after train.epochs ({train['epochs']}): "
            "ICAL (Eq. 18) would never run; lower train.adv_start, or set train.losses.ical: "
            "false to switch ICAL off"
        )
    if checked("train.warmup_epochs", "train.epochs") and train["warmup_epochs"] > train["epochs"]:
        problems.append(
            f"train.warmup_epochs ({train['warmup_epochs']}) is longer than train.epochs "
            f"({train['epochs']}): the learning rate would never reach train.lr; lower "
            "train.warmup_epochs"
        )
    id_loss = config.get("fgdi", {}).get("id_loss", 0.0)
    if checked("fgdi.id_loss", "train.labels") and id_loss > 0 and train["labels"] != "supervised":
        problems.append(
            f"fgdi.id_loss ({id_loss}) needs train.labels: supervised, the only labels that keep "
            f"their classes from epoch to epoch (train.labels: {train['labels']} renumbers them "
            "every epoch); set fgdi.id_loss: 0 for this run"
        )
    problems += prior_problems(config, checked)
    if checked("clip.model") and is_image_only(clip["model"]):
        problems += image_only_problems(config, checked)
    if checked("dataset.format", "synthetic") and dataset["format"] == "synthetic":
        from ccafl.data.synthetic import SyntheticSpec

        try:
            SyntheticSpec.from_config(config["synthetic"])
        except ValueError as error:
            problems.append(f"synthetic: {error}")
    return problems


def dg_problems(config: dict) -> list[str]:
    """The DG mode's rules (dataset.format: pooled): two or more sources (the domain classifier
    needs two), one or more targets, none of them a source, every name a domain of
    dg.domains, a real domain with its root, a synthetic one with a renderable spec."""
    dg, fmt = config["dg"], config["dataset"]["format"]
    sources, targets, domains = dg["sources"], dg["targets"], dg["domains"]
    if fmt != "pooled":
        if sources or targets:
            return [
                "dg.sources / dg.targets are set but dataset.format is "
                f"{fmt}: set dataset.format: pooled for the DG mode, or remove the dg section"
            ]
        return []
    problems = []
    if len(set(sources)) < 2:
        problems.append(
            f"dg.sources: {sources} names fewer than two datasets; the DG mode pools two or "
            "more sources (the domain classifier needs two), add another source"
        )
    if not targets:
        problems.append("dg.targets: empty; name at least one held-out dataset of dg.domains")
    overlap = sorted(set(sources) & set(targets))
    if overlap:
        problems.append(
            f"dg.targets: {', '.join(overlap)} is also in dg.sources; a held-out target must "
            "never be trained on, remove it from one of the two lists"
        )
    for key, names in (("dg.sources", sources), ("dg.targets", targets)):
        missing = [name for name in names if name not in domains]
        if missing:
            problems.append(
                f"{key}: {', '.join(missing)} not in dg.domains (known: "
                f"{', '.join(domains) or 'none'}); add an entry dg.domains.<name>"
            )
    for name, entry in domains.items():
        if entry.get("format", "synthetic") == "synthetic":
            from ccafl.data.pooled import synthetic_spec_config
            from ccafl.data.synthetic import SyntheticSpec

            try:
                SyntheticSpec.from_config(synthetic_spec_config(config, name))
            except ValueError as error:
                problems.append(f"dg.domains.{name}.synthetic: {error}")
        elif not entry.get("root"):
            problems.append(
                f"dg.domains.{name}.root: missing; a {entry['format']} domain is read from "
                "its dataset folder, set root to it"
            )
        elif entry.get("synthetic"):
            problems.append(f"dg.domains.{name}.synthetic: only for format: synthetic")
        problems += _protocol_problems(name, entry, name in targets)
    captions = dg["captions"] or (sources[0] if sources else None)
    if config["clip"]["pretrained"] == "captions" and captions is not None:
        entry = domains.get(captions, {})
        if captions not in sources or entry.get("format", "synthetic") != "synthetic":
            problems.append(
                f"dg.captions: {captions} must be a synthetic source (clip.pretrained: captions "
                "pretrains CLIP on its web photos, and a target is never read); name one, or "
                "set clip.pretrained to a weights file"
            )
    return problems


def _protocol_problems(name: str, entry: dict, is_target: bool) -> list[str]:
    """dg.domains.<name>.split: only for the small split-based datasets (an integer, or all);
    CUHK-SYSU is never a target. (combine_all is what a dataset does as a source, so a
    leave-one-out config sets it once for every dataset; a target ignores it.)"""
    from ccafl.data.dg_datasets import SPLIT_LOADERS, TRAIN_ONLY

    fmt, split = entry.get("format", "synthetic"), entry.get("split")
    key = f"dg.domains.{name}"
    problems = []
    if split is not None and fmt not in SPLIT_LOADERS:
        problems.append(
            f"{key}.split: applies to {', '.join(SPLIT_LOADERS)} only (format is {fmt}); remove it"
        )
    elif split is not None and not (isinstance(split, int) or split == "all"):
        problems.append(f"{key}.split: {split!r} is neither a split number (0-9) nor all")
    elif isinstance(split, int) and split < 0:
        problems.append(f"{key}.split: {split} is negative; the splits are numbered from 0")
    if is_target and fmt in TRAIN_ONLY:
        problems.append(
            f"{key}: a {fmt} dataset has no query and gallery (training only); use it as a source"
        )
    return problems


def dg_domain_problems(config: dict, workdir: Path) -> list[str]:
    """Every real domain's folders exist with its layout; synthetic domains lie below
    resources/ (they are rendered there), never over a folder ccafl did not create."""
    from ccafl.data.datasets import DatasetError, check_layout
    from ccafl.data.marker import MARKER_NAME, replaceable
    from ccafl.data.pooled import domains_from_config

    dg = config["dg"]
    problems = []
    for name, domain in domains_from_config(config).items():
        if name not in dg["sources"] and name not in dg["targets"]:
            continue
        root = workdir / domain.root
        if domain.format == "synthetic":
            if not _inside(root, workdir / "resources"):
                problems.append(
                    f"dataset.root ({config['dataset']['root']}): synthetic domains are rendered "
                    "at <dataset.root>/<name>, only below resources/; set dataset.root to "
                    "resources/<name>"
                )
                break
            if not replaceable(root):
                problems.append(
                    f"dg.domains.{name}: {domain.root} exists but was not created by ccafl "
                    f"synthesize (no {MARKER_NAME} file); move it away or rename the domain"
                )
            continue
        try:
            check_layout(root, domain.format, domain.layout)
        except DatasetError as error:
            problems.append(f"dg.domains.{name}.root ({domain.root}): {error}")
    return problems


def image_only_problems(config: dict, checked) -> list[str]:
    """What an image-only backbone (no text tower: no prompts, no texts) cannot train."""
    clip, train = config["clip"], config["train"]
    name = f"clip.model: {clip['model']} has no text tower"
    problems = []
    if checked("clip.pretrained") and clip["pretrained"] == "captions":
        problems.append(
            f"{name}, so clip.pretrained cannot be captions; use imagenet, a local ResNet-50 "
            "state dict file, or null"
        )
    if checked("train.losses.i2tce") and train["losses"]["i2tce"]:
        problems.append(f"{name}, so the image-text loss cannot run; set train.losses.i2tce: false")
    if checked("train.feature") and train.get("feature", "pooled") != "pooled":
        problems.append(f"{name} and no projection; set train.feature: pooled")
    if checked("dataset.format", "fgdi.domain_prompts") and (
        config["dataset"]["format"] == "pooled" and config.get("fgdi", {}).get("domain_prompts")
    ):
        problems.append(f"{name}, so it cannot learn prompts; set fgdi.domain_prompts: false")
    return problems


def check_config(config: dict, given: dict | None = None) -> dict:
    """Schema-validate ``config`` and apply the cross-field rules (among the ``given`` keys,
    see `config_problems`); ConfigError if any fails."""
    config = validate(config)
    problems = config_problems(config, given)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def run_configs(config: dict) -> dict[str, dict]:
    """The main run's config and every ablation variant's and sweep's, by a readable name."""
    from ccafl.ablation import run_config, runs

    configs = {"": config}
    for group in ("variants", "sweeps"):
        for run in runs(config, group):
            try:
                configs[run] = run_config(config, run)
            except ValueError as error:  # ConfigError is one; so is a bad variant override
                raise ConfigError(f"ablation {group} {_run_name(run)}: {error}") from error
    return configs


def _run_name(run: str) -> str:
    return run.removeprefix("ablation/").rstrip("/")


# --------------------------------------------------------------------------- dataset root


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path != folder and folder in path.parents


def dataset_problem(dataset: dict, workdir: Path) -> str | None:
    """Why ``dataset.root`` cannot be used as configured, or None."""
    from ccafl.data.marker import MARKER_NAME, replaceable

    root = workdir / dataset["root"]
    fmt = dataset["format"]
    if fmt == "pooled":  # the domains are checked one by one (dg_domain_problems)
        return None
    if fmt == "synthetic":
        if not _inside(root, workdir / "resources"):
            return (
                f"dataset.root ({dataset['root']}): the synthetic benchmark is written only "
                "below resources/ of the working directory, never elsewhere; set dataset.root "
                "to resources/<name> (or dataset.format to the real format of that folder)"
            )
        if not replaceable(root):
            return (
                f"dataset.root ({dataset['root']}) exists but was not created by ccafl "
                f"synthesize (no {MARKER_NAME} file), and dataset.format: synthetic would "
                "replace it; move that folder away, or point dataset.root at a new folder"
            )
        return None
    if not root.is_dir():
        return (
            f"dataset.root: folder not found: {dataset['root']} (dataset.format: {fmt} reads an "
            "existing dataset; nothing is generated for it: download the dataset and point "
            "dataset.root at it)"
        )
    from ccafl.data.datasets import DatasetError, check_layout

    try:
        check_layout(root, fmt, dataset.get("layout", "auto"))
    except DatasetError as error:
        return f"dataset.root ({dataset['root']}) does not have the {fmt} layout: {error}"
    return None


# --------------------------------------------------------------------------- CLIP weights


def looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith((".", "~"))
        or Path(value).suffix.lower() in WEIGHT_SUFFIXES
    )


def _shipped(model: str) -> bool:
    return (SHIPPED_CLIP_CONFIGS / f"{model}.json").is_file()


def weights_problem(clip: dict, workdir: Path | None = None) -> str | None:
    """Why ``clip.pretrained`` cannot be loaded on this machine, or None (no network used)."""
    from ccafl.models.weights import (
        IMAGENET_TAG,
        cached_imagenet_weights,
        imagenet_not_cached_message,
    )

    model, source = clip["model"], clip["pretrained"]
    image_only = is_image_only(model)  # torchvision's ResNet-50: its own sources, no tags
    if source in (None, "captions"):  # captions for it: image_only_problems names that
        return None if image_only or _shipped(model) else _model_problem(model)
    if image_only and source == IMAGENET_TAG:
        return None if cached_imagenet_weights() else imagenet_not_cached_message()
    path = Path(source).expanduser()
    if not path.is_absolute() and workdir is not None:
        path = workdir / path
    if path.is_file():
        return None if image_only or _shipped(model) else _model_problem(model)
    if image_only:
        return (
            f"clip.pretrained: ResNet-50 weights file not found: {source}; point it at a "
            "torchvision ResNet-50 state dict, or use imagenet (torchvision's cached file)"
        )
    if looks_like_path(source):
        return (
            f"clip.pretrained: weights file not found: {source}; point it at an existing "
            "checkpoint, or use an open_clip tag such as openai"
        )
    problem = _model_problem(model)
    if problem:
        return problem
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model)
    if not open_clip.is_pretrained_cfg(model, source):
        known = (
            f"open_clip tags for {model}: {', '.join(tags)}"
            if tags
            else f"{model} has no open_clip tags"
        )
        return (
            f"clip.pretrained: {source!r} is neither an existing file nor an open_clip tag "
            f"({known})"
        )
    from ccafl.models.weights import cached_hub_weights, not_cached_message

    if cached_hub_weights(model, source) is None:
        return not_cached_message(model, source)
    return None


def _model_problem(model: str) -> str | None:
    import difflib

    from ccafl.models.backbone import register_model_configs

    names = [*register_model_configs(), *IMAGE_ONLY_MODELS]
    if model in names:
        return None
    close = difflib.get_close_matches(model, names, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
    return f"clip.model: unknown CLIP model {model!r} ({hint})"


# --------------------------------------------------------------------------- checkpoints


def checkpoint_problem(path: str | Path) -> str | None:
    """Why an existing checkpoint file cannot be a complete torch.save archive, or None.

    Cheap (no torch): a torch.save file is a zip archive; a truncated one has no central
    directory, a damaged one fails the CRC of its pickle. Tensor bytes are not read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            pickles = [e for e in entries if e.filename.endswith("data.pkl")]
            if not pickles:
                return "not a torch checkpoint (no data.pkl in the archive)"
            if any(e.header_offset + e.compress_size > size for e in entries):
                return "truncated (an entry runs past the end of the file)"
            archive.read(pickles[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        return f"corrupt or truncated ({error})"
    return None


def recovery_hint(path: str | Path) -> str:
    """How to get an intact file back: the pipeline recomputes what it wrote."""
    path = Path(path)
    if "results" not in path.parts:
        return "pass an intact file (if the pipeline wrote it, delete it and rerun snakemake)"
    return (
        f"delete {path.parent}/ and rerun snakemake to recompute it and what follows "
        "(after a killed run, `snakemake --unlock` first)"
    )


def prior_problems(config: dict, checked) -> list[str]:
    """CLIP-FGDI's prior stage (fgdi.prior_epochs): a DG-mode stage on the true person ids
    that trains at least one of its two losses."""
    fgdi = config.get("fgdi", {})
    epochs = fgdi.get("prior_epochs", 0)
    if not checked("fgdi.prior_epochs") or epochs == 0:
        return []
    problems = []
    if checked("dataset.format") and config["dataset"]["format"] != "pooled":
        problems.append(
            f"fgdi.prior_epochs ({epochs}) is a stage of the DG mode (dataset.format: pooled, "
            "docs/domain-generalisation.md); set fgdi.prior_epochs: 0"
        )
    if checked("train.labels") and config["train"]["labels"] != "supervised":
        problems.append(
            f"fgdi.prior_epochs ({epochs}) trains on the true person ids: it needs "
            f"train.labels: supervised (got {config['train']['labels']}); set "
            "fgdi.prior_epochs: 0 for this run"
        )
    if checked("fgdi.id_loss", "fgdi.triplet") and fgdi["id_loss"] == 0 and fgdi["triplet"] == 0:
        problems.append(
            f"fgdi.prior_epochs ({epochs}) trains fgdi.id_loss x L_id + fgdi.triplet x L_tri, "
            "and both weights are 0: set one of them (CLIP-FGDI: 1.0 each)"
        )
    if checked("clip.model") and is_image_only(config["clip"]["model"]):
        problems.append(
            f"fgdi.prior_epochs ({epochs}) writes a CLIP for the prompt stage, and "
            f"clip.model: {config['clip']['model']} has no text tower; set fgdi.prior_epochs: 0"
        )
    return problems


def checked_checkpoint(path: str) -> str:
    """``path``, after making sure that, if it exists, it is a complete archive.

    Used by the workflow's input functions: a corrupt checkpoint stops Snakemake while it
    builds the DAG, before it deletes any output of the job that would read it.
    """
    if os.path.exists(path):
        problem = checkpoint_problem(path)
        if problem:
            sys.exit(f"ccafl: checkpoint {path} is {problem}; {recovery_hint(path)}")
    return path


# --------------------------------------------------------------------------- the workflow


def workflow_config(
    config: dict,
    workdir: Path | None = None,
    *,
    files: bool = True,
    imported_clip: str | Path | None = None,
) -> dict:
    """The validated config of a Snakemake run; UserError naming the first thing at fault.

    ``files=False`` checks the config alone (for maintenance commands such as --unlock).
    ``imported_clip``: the clip_import rule's copy of the main config's weights; once it
    exists the source is not needed any more (it may be gone), so it is not checked.
    """
    workdir = Path.cwd() if workdir is None else workdir
    config = validate(config)
    if not files:
        return config
    clips = {}
    for run, run_cfg in run_configs(config).items():
        # The first run at fault is enough: a variant mostly repeats the main run's problems.
        problems = config_problems(run_cfg)
        if problems:
            prefix = f"ablation variant {_run_name(run)}: " if run else ""
            raise ConfigError(prefix + "; ".join(problems))
        clips.setdefault((run_cfg["clip"]["model"], run_cfg["clip"]["pretrained"]), run)
    problem = dataset_problem(config["dataset"], workdir)
    if problem:
        raise ConfigError(problem)
    if config["dataset"]["format"] == "pooled":
        problems = dg_domain_problems(config, workdir)
        if problems:
            raise ConfigError("; ".join(problems))
    main_source = (config["clip"]["model"], config["clip"]["pretrained"])
    if imported_clip is not None and (workdir / imported_clip).is_file():
        clips.pop(main_source, None)
    for (model, pretrained), run in clips.items():
        problem = weights_problem({"model": model, "pretrained": pretrained}, workdir)
        if problem:
            prefix = f"ablation variant {_run_name(run)}: " if run else ""
            raise WeightsError(prefix + problem)
    return config


def workflow_config_or_exit(
    config: dict, argv: list[str] | None = None, imported_clip: str | None = None
) -> dict:
    """`workflow_config` for the Snakefile: a problem ends Snakemake with its one line."""
    argv = sys.argv if argv is None else argv
    files = not MAINTENANCE_FLAGS.intersection(argv)
    try:
        return workflow_config(config, files=files, imported_clip=imported_clip)
    except UserError as error:
        sys.exit(f"ccafl: {error}")


def config_file_or_exit(path: str) -> str:
    """``path``, after making sure it parses: Snakemake's own message names neither file nor line."""
    if os.path.isfile(path):
        try:
            read_config_file(Path(path))
        except UserError as error:
            sys.exit(f"ccafl: {error}")
    return path
