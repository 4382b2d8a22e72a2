# Config look-ups and input functions shared by the stage files.
import json
import shlex
import sys

DS = config["dataset"]["name"]
RESULTS = f"results/{DS}"
LOGS = f"logs/{DS}"
PYTHON = shlex.quote(sys.executable)
CCAFL = f"{PYTHON} -m ccafl"


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


def all_targets():
    return [f"{RESULTS}/ics/summary.json"]
