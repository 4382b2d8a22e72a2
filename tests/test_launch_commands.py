"""The GPU launch commands, built only when `resources.gpus_per_job > 0`: checked on a dry run.

`snakemake -n -p` prints every job's shell command without running it, so the commands a GPU
machine would run are tested here without a GPU: a GPU rule runs under `ccafl.gpu_lease`
(which gives the job its own devices), stages 2 and 3 start one process per GPU with torchrun
when a job gets more than one, and the GPU count changes nothing but the launcher.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from conftest import snakemake_dry_run

REPO = Path(__file__).resolve().parents[1]
PYTHON = shlex.quote(sys.executable)
CCAFL = f"{PYTHON} -m ccafl"
DDP_STAGES = {"intra", "inter-epoch"}  # stages 2 and 3


def lease(gpus: int) -> str:
    return f"{PYTHON} -m ccafl.gpu_lease --gpus {gpus} -- "


def torchrun(gpus: int) -> str:
    return f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {gpus} -m ccafl"


def expected_launcher(stage: str, gpus: int, uses_gpu: bool) -> str:
    if not uses_gpu or gpus == 0:
        return CCAFL
    if stage in DDP_STAGES and gpus > 1:
        return lease(gpus) + torchrun(gpus)
    return lease(gpus) + CCAFL


def planned_commands(workdir: Path, gpus: int) -> list[dict]:
    """Every job of the default target: rule, its gpu resource and its shell command."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["resources"] = {**config.get("resources", {}), "gpus_per_job": gpus}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    out = snakemake_dry_run(workdir, "--cores", "2", configfile=workdir / "config.yaml")
    jobs, rule, gpu = [], None, None
    for line in out.splitlines():
        if match := re.match(r"^\s*(?:local)?rule (\w+):", line):
            rule, gpu = match[1], None
        elif match := re.match(r"^\s*resources: .*\bgpu=(\d+)", line):
            gpu = int(match[1])
        elif line.startswith("Shell command: ") and line != "Shell command: None":  # rule all
            jobs.append({"rule": rule, "gpu": gpu, "command": line.removeprefix("Shell command: ")})
    assert not (workdir / "results").exists()  # a dry run writes nothing
    return jobs


def rule_family(rule: str) -> str:
    """Stage 3 has one rule per block of epochs (inter_epochs_006, inter_epochs_013, ...)."""
    return "inter_epochs" if rule.startswith("inter_epochs_") else rule


def split_command(command: str, launchers: list[str]) -> tuple[str, str, str]:
    """(launcher, stage, arguments without --set) of one `... -m ccafl <stage> --set ...`."""
    launcher = max((x for x in launchers if command.startswith(x + " ")), key=len, default=None)
    assert launcher is not None, f"no known launcher starts {command[:200]!r}"
    head, redirect, log = command[len(launcher) :].partition(" > ")
    rest = shlex.split(head)
    stage, arguments = rest[0], rest[1:]
    if "--set" in arguments:  # the config sections: JSON, the same whatever the GPU count
        at = arguments.index("--set")
        assert isinstance(json.loads(arguments[at + 1]), dict)
        del arguments[at : at + 2]
    return launcher, stage, " ".join(arguments) + redirect + log


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    base = tmp_path_factory.mktemp("launch")
    return {gpus: planned_commands(base / f"gpus{gpus}", gpus) for gpus in (0, 1, 2)}


@pytest.mark.parametrize("gpus", [1, 2])
def test_gpu_jobs_run_under_a_lease_and_stages_2_3_under_torchrun(plans: dict, gpus: int) -> None:
    launchers = [CCAFL, lease(gpus) + CCAFL, lease(gpus) + torchrun(gpus)]
    seen = set()
    for job in plans[gpus]:
        launcher, stage, _ = split_command(job["command"], launchers)
        uses_gpu = job["gpu"] is not None and job["gpu"] > 0
        if uses_gpu:
            assert job["gpu"] == gpus, f"rule {job['rule']} asks for gpu={job['gpu']}, not {gpus}"
        want = expected_launcher(stage, gpus, uses_gpu)
        assert launcher == want, (
            f"gpus_per_job={gpus}: rule {job['rule']} ({stage}) is launched as {launcher!r}, "
            f"expected {want!r} (GPU rules under ccafl.gpu_lease, torchrun for stages 2-3 only "
            "when a job has more than one GPU)"
        )
        seen.add((rule_family(job["rule"]), launcher))
    # The commands a GPU run needs are actually among the planned jobs.
    on_gpu = lease(gpus) + CCAFL
    ddp = lease(gpus) + (torchrun(gpus) if gpus > 1 else CCAFL)
    expect = {
        ("clip_pretrain", on_gpu),
        ("prompt", on_gpu),
        ("zeroshot", on_gpu),
        ("evaluate", on_gpu),
        ("intra", ddp),
        ("inter_epochs", ddp),
        ("ics", CCAFL),
        ("final", CCAFL),
    }
    assert expect <= seen, sorted(expect - seen)


def test_cpu_run_has_no_lease_and_no_torchrun(plans: dict) -> None:
    for job in plans[0]:
        assert job["command"].startswith(CCAFL + " "), job["command"][:200]
        assert "gpu_lease" not in job["command"] and "torch.distributed" not in job["command"]


def test_gpu_count_changes_only_the_launcher(plans: dict) -> None:
    """Same jobs, same stage arguments and logs; only the launcher differs."""

    def by_job(gpus: int) -> list[tuple[str, str, str]]:
        launchers = (
            [CCAFL, *(lease(gpus) + x for x in (CCAFL, torchrun(gpus)))] if gpus else [CCAFL]
        )
        return sorted(
            (job["rule"], *split_command(job["command"], launchers)[1:]) for job in plans[gpus]
        )

    assert by_job(0) == by_job(1) == by_job(2)


def exact_commands(gpus: int) -> dict[str, str]:
    """The full shell commands of stages 1-3 on the default config (its --set JSON as CFG)."""
    ddp = lease(gpus) + (torchrun(gpus) if gpus > 1 else CCAFL)
    results, logs = "results/synthetic", "logs/synthetic"
    paths = f"--ics-dir {results}/ics --prompt-dir {results}/prompt"
    block = range(6, 13)  # train.epochs_per_job: 7 after E_intra = 5
    return {
        "prompt": f"{lease(gpus)}{CCAFL} prompt --set CFG --stage-keys --clip {results}/clip/pretrained.pt "
        f"--ics-dir {results}/ics --out-dir {results}/prompt > {logs}/prompt.log 2>&1",
        "intra": f"{ddp} intra --set CFG --stage-keys --clip {results}/clip/pretrained.pt {paths} "
        f"--out-dir {results}/intra > {logs}/intra.log 2>&1",
        "inter_epochs_006": f"{ddp} inter-epoch --set CFG --stage-keys  --epoch "
        + " ".join(map(str, block))
        + f" --previous {results}/intra/checkpoint.pt {paths} --out-dir "
        + " ".join(f"{results}/inter/epoch_{e:03d}" for e in block)
        + f" > {logs}/inter_epochs_006.log 2>&1",
    }


@pytest.mark.parametrize("gpus", [1, 2])
def test_exact_launch_commands_of_stages_1_to_3(plans: dict, gpus: int) -> None:
    commands = {job["rule"]: job["command"] for job in plans[gpus]}
    for rule, want in exact_commands(gpus).items():
        got = re.sub(r"--set '[^']*'", "--set CFG", commands[rule])
        assert got == want, (
            f"gpus_per_job={gpus}: the {rule} job's command is\n  {got}\nexpected\n  {want}"
        )
