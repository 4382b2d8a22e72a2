# Config look-ups and input functions shared by the stage files.
#
# Per-run rules (prompt .. evaluate) have a `{run}` path prefix: "" for the main run,
# "ablation/<variant>-s<seed>/" for a variant (ccafl.ablation); each run has its own config.
import shlex
import sys
from pathlib import Path

from ccafl.ablation import run_config, runs, sections_json

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
# What stages 2 and 3 depend on: a change here reruns training, not ICS or the prompts.
TRAINING_SECTIONS = ("dataset", "input", "clip", "prompt", "train")
PROMPT_SECTIONS = ("dataset", "input", "clip", "prompt")


wildcard_constraints:
    run=r"(ablation/[A-Za-z0-9_.+=-]+-s\d+/)?",
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
    if uses_caption_clip(wildcards.run):
        return {"clip": f"{RESULTS}/clip/pretrained.pt"}
    if imports_clip(wildcards.run):
        return {"clip": f"{RESULTS}/clip/imported.pt"}
    return {}


def clip_arg(wildcards, input):
    return f"--clip {input.clip}" if "clip" in input.keys() else ""


def epoch_checkpoint(run, epoch):
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


def run_metrics(group):
    return [f"{RESULTS}/{run}eval/metrics.json" for run in runs(config, group)]


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
    return [f"{RESULTS}/eval/metrics.json", f"{RESULTS}/report/metrics.md", *epoch_artifacts()]
