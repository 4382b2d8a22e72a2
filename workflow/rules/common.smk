# Config look-ups and input functions shared by the stage files.
#
# Per-run rules (prompt .. evaluate) have a `{run}` path prefix: "" for the main run,
# "ablation/<variant>-s<seed>/" for a variant (ccafl.ablation); each run has its own config.
import re
import shlex
import sys
from pathlib import Path

from ccafl.ablation import RUN_PATTERN as RUN_PATTERN_STRICT
from ccafl.ablation import run_config, runs, sections_json
from ccafl.checks import checked_checkpoint

DS = config["dataset"]["name"]
RESULTS = f"results/{DS}"
LOGS = f"logs/{DS}"
PYTHON = shlex.quote(sys.executable)
CCAFL = f"{PYTHON} -m ccafl"
GPUS = config["resources"]["gpus_per_job"]
# GPU rules run under a device lease (ccafl.gpu_lease sets CUDA_VISIBLE_DEVICES per job), so
# jobs that Snakemake runs side by side get different devices. Stages 2 and 3 start one
# process per GPU with torchrun (DistributedDataParallel) when a job gets more than one.
GPU_CCAFL = f"{PYTHON} -m ccafl.gpu_lease --gpus {GPUS} -- {CCAFL}" if GPUS else CCAFL
_TORCHRUN = f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m ccafl"
DDP_CCAFL = f"{PYTHON} -m ccafl.gpu_lease --gpus {GPUS} -- {_TORCHRUN}" if GPUS > 1 else GPU_CCAFL
RUN = "{run}"
# CPU threads of a compute job: all cores when jobs run on the CPU one after the other (the
# training chain is sequential), a few when GPU jobs may run side by side.
THREADS = config["resources"]["threads_per_job"] or (workflow.cores if GPUS == 0 else 4)
# What stages 2 and 3 depend on: a change here reruns training, not ICS or the prompts.
TRAINING_SECTIONS = ("dataset", "input", "clip", "prompt", "train")
PROMPT_SECTIONS = ("dataset", "input", "clip", "prompt")


RUN_PATTERN = r"(ablation/[A-Za-z0-9_.+=-]+-s\d+/)?"


wildcard_constraints:
    run=RUN_PATTERN,
    epoch=r"\d{3}",


def cfg_json(*sections, run=""):
    """The config sections a stage depends on, as one shell-quoted JSON argument.

    Passed as a param, so Snakemake reruns a stage exactly when these sections change.
    """
    return shlex.quote(sections_json(run_config(config, run), sections))


def run_cfg(*sections):
    """cfg_json for the run of the job's `{run}` wildcard."""
    return lambda wildcards: cfg_json(*sections, run=wildcards.run)


def dataset_inputs():
    """The synthetic benchmark is produced by the pipeline; real datasets are external."""
    if config["dataset"]["format"] == "synthetic":
        return [f"{config['dataset']['root']}/spec.json"]
    return []


def uses_caption_clip(run=""):
    return run_config(config, run)["clip"]["pretrained"] == "captions"


CLIP_SOURCE_KEYS = ("model", "pretrained", "quick_gelu")


def imports_clip(run=""):
    """A tag or local file, read once by clip_import. A variant naming another source reads
    it directly (there is one import per dataset: the main config's)."""
    clip = run_config(config, run)["clip"]
    same = all(clip[key] == config["clip"][key] for key in CLIP_SOURCE_KEYS)
    return same and clip["pretrained"] not in (None, "captions")


def clip_source_file():
    """The user's weights file as clip_import's input (so replacing it re-imports); [] for a
    tag. Once imported, the file may be deleted: nothing downstream reads it."""
    source = config["clip"]["pretrained"]
    if source in (None, "captions"):
        return []
    path = Path(source).expanduser()
    looks_like_path = path.is_file() or "/" in source or path.suffix in WEIGHT_SUFFIXES
    return [str(path)] if looks_like_path else []


WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors"}


def prompt_run(run):
    """Variants whose stage-1 config equals the main run's reuse the main run's prompts."""
    same = sections_json(run_config(config, run), PROMPT_SECTIONS) == sections_json(
        config, PROMPT_SECTIONS
    )
    return "" if same else run


def prompt_dir(wildcards):
    return f"{RESULTS}/{prompt_run(wildcards.run)}prompt"


def text_features(wildcards):
    return f"{prompt_dir(wildcards)}/text_features.parquet"


def clip_input(wildcards):
    """The pipeline's copy of the pretrained CLIP that stages 1 and 2 start from."""
    run = getattr(wildcards, "run", "")
    if uses_caption_clip(run):
        return {"clip": checked_checkpoint(f"{RESULTS}/clip/pretrained.pt")}
    if imports_clip(run):
        return {"clip": f"{RESULTS}/clip/imported.pt"}
    return {}


def clip_arg(wildcards, input):
    return f"--clip {input.clip}" if "clip" in input.keys() else ""


def epoch_checkpoint(run, epoch):
    """The checkpoint after ``epoch``; one that exists but is damaged stops the DAG here,
    before Snakemake deletes the outputs of the job that would read it (ccafl.checks)."""
    return checked_checkpoint(_epoch_checkpoint(run, epoch))


def _epoch_checkpoint(run, epoch):
    train = run_config(config, run)["train"]
    if epoch <= train["intra_epochs"]:
        return f"{RESULTS}/{run}intra/checkpoint.pt"
    return f"{RESULTS}/{run}inter/epoch_{epoch:03d}/checkpoint.pt"


def previous_checkpoint(wildcards):
    return epoch_checkpoint(wildcards.run, int(wildcards.epoch) - 1)


def last_checkpoint(wildcards):
    train = run_config(config, wildcards.run)["train"]
    return epoch_checkpoint(wildcards.run, max(train["epochs"], train["intra_epochs"]))


def inter_epochs(run=""):
    train = run_config(config, run)["train"]
    return list(range(train["intra_epochs"] + 1, train["epochs"] + 1))


def inter_blocks(run=""):
    """The run's stage-3 epochs cut into blocks of train.epochs_per_job, one job each."""
    epochs = inter_epochs(run)
    size = run_config(config, run)["train"]["epochs_per_job"]
    return tuple(tuple(epochs[i : i + size]) for i in range(0, len(epochs), size))


def all_runs():
    return ["", *runs(config, "variants"), *runs(config, "sweeps")]


def block_layouts():
    """Runs grouped by how their stage 3 is cut into blocks: {blocks: [run, ...]}."""
    layouts = {}
    for run in all_runs():
        layouts.setdefault(inter_blocks(run), []).append(run)
    return layouts


def block_rule_name(layout_index, block):
    prefix = "inter_epochs" if layout_index == 0 else f"inter_epochs_layout{layout_index}"
    return f"{prefix}_{block[0]:03d}"


def run_constraint(layout_runs):
    """Wildcard constraint for {run}: the runs of one block layout (all runs when only one)."""
    if len(block_layouts()) == 1:
        return RUN_PATTERN
    return "(" + "|".join(re.escape(run) for run in layout_runs) + ")"


def epoch_dir(run, epoch):
    return f"{RESULTS}/{run}inter/epoch_{epoch:03d}"


EPOCH_FILES = ("checkpoint.pt", "graph.parquet", "labels.parquet", "log.parquet", "metrics.json")


def block_outputs(block):
    """Every artifact of every epoch of a block, named <file stem>_<epoch>."""
    return {
        f"{name.split('.')[0]}_{epoch:03d}": f"{RESULTS}/{RUN}inter/epoch_{epoch:03d}/{name}"
        for epoch in block
        for name in EPOCH_FILES
    }


# The name cluster profiles give stage 3 (set-resources, groups): the block rules' own names
# carry their first epoch, so a profile cannot list them; its `inter_epoch` entries apply to all.
STAGE3_PROFILE_NAME = "inter_epoch"


def stage3_resources(block):
    """The profile's `inter_epoch` resources; its runtime is per epoch, times the block."""
    profile = workflow.resource_settings.overwrite_resources.get(STAGE3_PROFILE_NAME, {})
    # Parsed values carry the number or string in .value, as Snakemake applies them.
    resources = {"gpu": GPUS, **{k: getattr(v, "value", v) for k, v in profile.items()}}
    if isinstance(resources.get("runtime"), int):
        resources["runtime"] *= len(block)
    return resources


def stage3_group():
    return workflow.group_settings.overwrite_groups.get(STAGE3_PROFILE_NAME)


def uses_supervised_labels(run=""):
    return run_config(config, run)["train"]["labels"] == "supervised"


def supervised_input(wildcards):
    if uses_supervised_labels(wildcards.run):
        return {"labels": f"{RESULTS}/supervised/labels.parquet"}
    return {}


def labels_arg(wildcards, input):
    return f"--labels {input.labels}" if "labels" in input.keys() else ""


def run_metrics(group):
    return [f"{RESULTS}/{run}eval/metrics.json" for run in runs(config, group)]


def variant_metrics(variant):
    """eval/metrics.json of a variant at every seed of ablation.seeds."""
    if variant not in config["ablation"]["variants"]:
        raise ValueError(f"ablation.variants has no {variant!r}: the calibration table needs it")
    return [
        f"{RESULTS}/ablation/{variant}-s{seed}/eval/metrics.json"
        for seed in config["ablation"]["seeds"]
    ]


def seed_args(flag, metrics_files):
    seeds = config["ablation"]["seeds"]
    return " ".join(
        f"{flag} {seed} {shlex.quote(path)}" for seed, path in zip(seeds, metrics_files, strict=True)
    )


def run_args(group, metrics_files):
    """--run VARIANT SEED FILE per run of the group, for the variant table."""
    args = []
    for run, path in zip(runs(config, group), metrics_files, strict=True):
        match = RUN_PATTERN_STRICT.match(run)
        args.append(f"--run {match['variant']} {match['seed']} {shlex.quote(path)}")
    return " ".join(args)


def epoch_artifacts(run=""):
    """Every inter epoch's association graph and metrics: deleting one regenerates it."""
    return [
        f"{RESULTS}/{run}inter/epoch_{epoch:03d}/{name}"
        for epoch in inter_epochs(run)
        for name in ("graph.parquet", "metrics.json")
    ]


def report_inputs(wildcards):
    inputs = {
        "metrics": f"{RESULTS}/eval/metrics.json",
        "cmc": f"{RESULTS}/eval/cmc.parquet",
        "features": f"{RESULTS}/eval/features.parquet",
        "intra": f"{RESULTS}/intra/log.parquet",
        "prompt": f"{RESULTS}/prompt/log.parquet",
        "epochs": epoch_artifacts(),
    }
    if uses_caption_clip():
        inputs["zero_shot"] = f"{RESULTS}/clip/zero_shot.json"
    return inputs


def report_file(name, caption, category):
    return report(f"{RESULTS}/report/{name}", caption=f"../report/{caption}.rst", category=category)


def all_targets():
    return [
        f"{RESULTS}/eval/metrics.json",
        f"{RESULTS}/reference/zeroshot.json",
        f"{RESULTS}/report/metrics.md",
        *epoch_artifacts(),
    ]
