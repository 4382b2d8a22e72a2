# Config look-ups and input functions shared by the stage files.
import json
import shlex
import sys

DS = config["dataset"]["name"]
RESULTS = f"results/{DS}"
LOGS = f"logs/{DS}"
PYTHON = shlex.quote(sys.executable)
CCAFL = f"{PYTHON} -m ccafl"
GPUS = config["resources"]["gpus_per_job"]
TRAIN = config["train"]
# What stages 2 and 3 depend on: a change here reruns training, not ICS or the prompts.
TRAINING_SECTIONS = ("dataset", "input", "clip", "prompt", "train", "eval")


def cfg_json(*sections):
    """The config sections a stage depends on, as one shell-quoted JSON argument.

    Passed as a param, so Snakemake reruns a stage exactly when these sections change.
    """
    return shlex.quote(json.dumps({s: config[s] for s in sections}, sort_keys=True))


def dataset_inputs():
    """The synthetic benchmark is produced by the pipeline; real datasets are external."""
    if config["dataset"]["format"] == "synthetic":
        return [f"{config['dataset']['root']}/spec.json"]
    return []


def uses_caption_clip():
    return config["clip"]["pretrained"] == "captions"


def clip_input(wildcards):
    return {"clip": f"{RESULTS}/clip/pretrained.pt"} if uses_caption_clip() else {}


def clip_arg(wildcards, input):
    return f"--clip {input.clip}" if uses_caption_clip() else ""


def epoch_checkpoint(epoch):
    if epoch <= TRAIN["intra_epochs"]:
        return f"{RESULTS}/intra/checkpoint.pt"
    return f"{RESULTS}/inter/epoch_{epoch:03d}/checkpoint.pt"


def previous_checkpoint(wildcards):
    return epoch_checkpoint(int(wildcards.epoch) - 1)


def last_checkpoint():
    return epoch_checkpoint(max(TRAIN["epochs"], TRAIN["intra_epochs"]))


def all_targets():
    return [f"{RESULTS}/eval/metrics.json"]
