# Config look-ups and input functions shared by the stage files.
#
# Per-run rules (prompt .. evaluate) have a `{run}` path prefix: "" for the main run,
# "ablation/<variant>-s<seed>/" for a variant (ccafl.ablation); each run has its own config.
import json
import re
import shlex
import sys
from pathlib import Path

from ccafl.ablation import RUN_PATTERN as RUN_PATTERN_STRICT
from ccafl.ablation import run_config, runs
from ccafl.checks import checked_checkpoint
from ccafl.config import select_keys
from ccafl.models.weights import is_image_only

DS = config["dataset"]["name"]
RESULTS = f"results/{DS}"
LOGS = f"logs/{DS}"
PYTHON = shlex.quote(sys.executable)
GPUS = config["resources"]["gpus_per_job"]
# The software every job runs with (`conda:`), the GPU environment of environment.yml. Runs
# without `--sdm conda` use the environment Snakemake itself runs in (`make install`).
CONDA_ENV = "../../environment.yml"


class Launcher:
    """The command a rule's shell starts a stage with, passed as a param (`{params.launch}`).

    Not a string on purpose: Snakemake's rerun check records only plain-typed params, and how
    a job is started (the interpreter's path, a GPU lease, torchrun) changes no number, so
    changing it must never rerun a job.
    """

    def __init__(self, command):
        self.command = command

    def __str__(self):
        return self.command


CCAFL = f"{PYTHON} -m ccafl"
# GPU rules run under a device lease (ccafl.gpu_lease sets CUDA_VISIBLE_DEVICES per job), so
# jobs that Snakemake runs side by side get different devices. Stages 2 and 3 start one
# process per GPU with torchrun (DistributedDataParallel) when a job gets more than one.
_LEASE = f"{PYTHON} -m ccafl.gpu_lease --gpus {GPUS} -- "
_TORCHRUN = f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m ccafl"
LAUNCH = Launcher(CCAFL)
GPU_LAUNCH = Launcher(_LEASE + CCAFL if GPUS else CCAFL)
DDP_LAUNCH = Launcher(_LEASE + _TORCHRUN if GPUS > 1 else str(GPU_LAUNCH))
RUN = "{run}"
# CPU threads of a compute job: all cores when jobs run on the CPU one after the other (the
# training chain is sequential), a few when GPU jobs may run side by side.
THREADS = config["resources"]["threads_per_job"] or (workflow.cores if GPUS == 0 else 4)


def keys_except(section, excluded):
    """Every key of a config section (nested ones one by one) except the ``excluded`` ones."""

    def leaves(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return tuple(key for key in leaves(config[section], f"{section}.") if key not in excluded)


# The config keys each stage reads: a rule passes exactly these (`cfg_json`), so Snakemake
# reruns a stage when one of them changes and never for any other key (README, "Reruns").
# The end-to-end tests run every job with CCAFL_STRICT_CONFIG=1, where a stage sees only these.
# Job layout: how stage 3 is cut into jobs; it changes no number (a changed block reruns
# through the blocks' own --epoch params).
JOB_LAYOUT_KEYS = ("train.epochs_per_job",)
# Read by stage 3 only: changing one reruns the stage-3 blocks, not stage 2.
STAGE3_ONLY_KEYS = (
    "train.adv_start",
    "train.eps",
    "train.threshold",
    "train.camera_centering",
    "train.association_search",
    "train.labels",
    "train.losses.ical",
)
# Chooses a run's training table (an input file: the ICS table or stage A's clusters), which
# no stage reads as a key; a change reruns the stages through that input.
LABEL_SOURCE_KEYS = ("train.camera_labels",)
SYNTHESIZE_KEYS = ("dataset.format", "dataset.root", "synthetic")
ICS_KEYS = ("dataset.root", "dataset.format", "dataset.verify_images", "dataset.layout")
# The DG mode (dataset.format: pooled): the pooled sources' tables read the sources' entries,
# a target's tables its own entry, so a change to one target reruns only its evaluations.
DG = config["dg"]
IS_DG = config["dataset"]["format"] == "pooled"
DG_SOURCE_KEYS = ("dg.sources", *(f"dg.domains.{name}" for name in DG["sources"]))
if IS_DG:
    ICS_KEYS = (*ICS_KEYS, *DG_SOURCE_KEYS)
CLIP_SOURCE_KEYS = ("clip.model", "clip.pretrained", "clip.quick_gelu")
CLIP_PRETRAIN_KEYS = ("dataset.root", "input", "clip", "clip_pretrain")
PROMPT_KEYS = ("dataset.root", "input", "clip", "prompt")
# CLIP-FGDI's domain parts, DG mode only (other modes are not given the keys: they are off).
FGDI_PROMPT_KEYS = tuple(
    f"fgdi.{key}"
    for key in ("domain_prompts", "omega", "grl_lambda", "classifier_lr", "domain_epochs")
)
FGDI_STAGE3_KEYS = (
    "fgdi.domain_prompts",
    "fgdi.beta",
    "fgdi.apn_sign",
    "fgdi.triplet",
    "fgdi.id_loss",
)
if IS_DG:
    PROMPT_KEYS = (*PROMPT_KEYS, *FGDI_PROMPT_KEYS)
# CLIP-FGDI's prior stage (DG mode): its losses' weights and the training keys its epochs use
# (the learning rate of prior epoch e is the run's epoch e's: the schedule's keys).
PRIOR_KEYS = (
    "dataset.root",
    "input",
    "clip",
    *(f"fgdi.{key}" for key in ("prior_epochs", "id_loss", "triplet")),
    *(f"train.{key}" for key in ("P", "K", "lr", "weight_decay", "feature", "label_smoothing")),
    *(f"train.{key}" for key in ("epochs", "warmup_epochs", "iters_per_epoch", "seed", "amp")),
    *(f"train.{key}" for key in ("image_cache", "num_workers", "classifier_temperature")),
    "train.classifier_lr",
)
INTRA_KEYS = (
    "dataset.root",
    "input",
    "clip",
    *keys_except("train", STAGE3_ONLY_KEYS + JOB_LAYOUT_KEYS + LABEL_SOURCE_KEYS),
)
# Stage A of the unsupervised mode: its own section and the training keys its epochs use.
LOCAL_CLUSTER_KEYS = (
    "dataset.root",
    "input",
    "clip",
    *(f"clusters.{key}" for key in ("epochs", "images_per_cluster", "models", "k1", "k2")),
    *(f"train.{key}" for key in ("P", "K", "lr", "weight_decay", "feature", "temperature")),
    *(f"train.{key}" for key in ("momentum", "iters_per_epoch", "seed", "image_cache")),
    *(f"train.{key}" for key in ("num_workers", "amp", "classifier_temperature", "classifier_lr")),
)
# Stage 3 writes the run's configuration into every checkpoint and so into final/model.pt:
# all of it but the job layout (a change to a stage-2 key reruns stage 3 through intra anyway).
INTER_KEYS = (
    "dataset",
    "input",
    "clip",
    "prompt",
    *keys_except("train", JOB_LAYOUT_KEYS + LABEL_SOURCE_KEYS),
)
# CALR's stage B (train.labels: refined) reads these in stage 3, and only there.
STAGE_B_KEYS = tuple(
    f"clusters.{key}"
    for key in (
        "k",
        "min_similarity",
        "min_size",
        "pivot",
        "refine",
        "weights_after",
        "alignment_epochs",
        "alignment_loss",
    )
)


def inter_cfg(wildcards):
    """Stage 3's keys for the run: with CALR's stage B also its clustering keys."""
    refined = run_config(config, wildcards.run)["train"]["labels"] == "refined"
    fgdi = FGDI_STAGE3_KEYS if IS_DG else ()
    return cfg_json(*INTER_KEYS, *(STAGE_B_KEYS if refined else ()), *fgdi, run=wildcards.run)


def uses_domain_prompts(run=""):
    return IS_DG and run_config(config, run)["fgdi"]["domain_prompts"]


def prompt_outputs():
    """Stage 1's files; in the DG mode also the domain-relevant text features."""
    outputs = {
        "tokens": f"{RESULTS}/{RUN}prompt/prompt_tokens.pt",
        "text": f"{RESULTS}/{RUN}prompt/text_features.parquet",
        "log": f"{RESULTS}/{RUN}prompt/log.parquet",
        "metrics": f"{RESULTS}/{RUN}prompt/metrics.json",
    }
    if IS_DG:
        outputs["domain_text"] = f"{RESULTS}/{RUN}prompt/domain_text_features.parquet"
    return outputs


def domain_text_arg(wildcards, output):
    return f" --domain-text {output.domain_text}" if IS_DG else ""  # leading space: optional


def domain_text_input(wildcards):
    """Stage 3's t- per gid, for a DG run with CLIP-FGDI's domain parts."""
    if uses_domain_prompts(wildcards.run):
        return {"domain_text": f"{prompt_dir(wildcards)}/domain_text_features.parquet"}
    return {}


def stage3_domain_text_arg(wildcards, input):
    return f" --domain-text {input.domain_text}" if "domain_text" in input.keys() else ""


# Evaluation reads the model's own config from model.pt. Its loader workers (train.num_workers)
# change no number, so they are passed as a resource (`loader_workers`), which reruns nothing.
EVALUATE_KEYS = ("dataset.name", "dataset.root", "input", "eval")
# The reference rows evaluate every feature on both sides of its neck by cosine, so
# eval.neck and eval.distance (the trained model's evaluation) rerun no reference.
ZEROSHOT_KEYS = ("dataset.name", "dataset.root", "input", "clip", "eval.batch_size", "eval.rerank")
UNTRAINED_KEYS = (*ZEROSHOT_KEYS, "train.seed")  # the seed of the random network
REPORT_KEYS = ("dataset.name", "dataset.root")  # the page title; the retrieval examples' images
VARIANT_TABLE_KEYS = ("ablation", "clip.pretrained", "train.losses", "train.labels")


RUN_PATTERN = r"(ablation/[A-Za-z0-9_.+=-]+-s\d+/)?"


wildcard_constraints:
    run=RUN_PATTERN,
    epoch=r"\d{3}",
    domain=r"[A-Za-z0-9_.-]+",
    target=r"[A-Za-z0-9_.-]+",


def input_folder(name):
    """The folder of a named input, for stages that read several files of one folder."""
    return lambda wildcards, input: str(Path(input[name]).parent)


def output_folder(name):
    """The folder of a named output, for stages that write several files into one folder."""
    return lambda wildcards, output: str(Path(output[name]).parent)


def run_label(wildcards):
    """The model name an evaluation writes into metrics.json: the variant and seed, or CCAFL."""
    match = RUN_PATTERN_STRICT.match(wildcards.run)
    return f"{match['variant']}-s{match['seed']}" if match else "CCAFL"


def cfg_json(*keys, run=""):
    """The config keys a stage reads (sections or single keys), as one shell-quoted JSON
    argument of the run's config.

    Passed as a param, so Snakemake reruns a stage exactly when one of these keys changes.
    """
    return shlex.quote(keys_json(run_config(config, run), keys))


def keys_json(a_config, keys):
    return json.dumps(select_keys(a_config, keys), sort_keys=True)


def run_cfg(*keys):
    """cfg_json for the run of the job's `{run}` wildcard."""
    return lambda wildcards: cfg_json(*keys, run=wildcards.run)


def loader_workers(wildcards=None):
    """DataLoader workers of an evaluation's feature extraction (train.num_workers of the run).

    A resource, not a param: the features are the same whatever the count, so changing it must
    not rerun an evaluation (Snakemake reruns on params, never on resources).
    """
    return run_config(config, getattr(wildcards, "run", ""))["train"]["num_workers"]


def dataset_inputs():
    """The synthetic benchmark is produced by the pipeline; real datasets are external. In
    the DG mode: every synthetic source."""
    if IS_DG:
        return [domain_spec(name) for name in DG["sources"] if is_synthetic_domain(name)]
    if config["dataset"]["format"] == "synthetic":
        return [f"{config['dataset']['root']}/spec.json"]
    return []


def is_synthetic_domain(name):
    return DG["domains"][name].get("format", "synthetic") == "synthetic"


def domain_spec(name):
    """spec.json of a synthetic DG domain, rendered at <dataset.root>/<name>."""
    return f"{config['dataset']['root']}/{name}/spec.json"


def synthetic_domains():
    return [name for name in (*DG["sources"], *DG["targets"]) if is_synthetic_domain(name)]


def captions_root():
    """The synthetic world whose captions pretrain the tiny CLIP: dataset.root, or in the DG
    mode the source dg.captions names (default: the first source)."""
    if IS_DG:
        return f"{config['dataset']['root']}/{DG['captions'] or DG['sources'][0]}"
    return config["dataset"]["root"]


def domain_keys(wildcards):
    """The keys a DG domain's rules read: where it lies and its own entry."""
    name = getattr(wildcards, "domain", None) or wildcards.target
    keys = ("dataset.format", "dataset.root", "synthetic", f"dg.domains.{name}")
    return cfg_json(
        *keys, *(("dataset.verify_images", "dg.targets") if "target" in wildcards.keys() else ())
    )


def target_inputs(wildcards):
    return [domain_spec(wildcards.target)] if is_synthetic_domain(wildcards.target) else []


def target_dir(target):
    return f"{RESULTS}/targets/{target}"


# The DG table's rows: the ablation variants of the config among these, by display name.
DG_MODELS = {
    "order7": "CCAFL (ICS labels of the sources)",
    "supervised": "pooled, true ids (CLIP-ReID-style)",
    "fgdi": "CLIP-FGDI (guiding loss: paper sign)",
    "fgdi-code": "CLIP-FGDI (guiding loss: code sign)",
    "fgdi-noapn": "CLIP-FGDI prompts, no guiding loss",
}


def dg_runs():
    """(model name, seed, target, metrics file) of every row of the DG table."""
    rows = [
        ("zero-shot CLIP", 0, target, f"{RESULTS}/reference/targets/{target}/zeroshot.json")
        for target in DG["targets"]
    ]
    for variant, name in DG_MODELS.items():
        if variant not in config["ablation"]["variants"]:
            continue
        for seed in config["ablation"]["seeds"]:
            rows += [
                (
                    name,
                    seed,
                    target,
                    f"{RESULTS}/ablation/{variant}-s{seed}/eval/targets/{target}/metrics.json",
                )
                for target in DG["targets"]
            ]
    return rows


def dg_table_args(wildcards):
    return " ".join(
        f"--run {shlex.quote(model)} {seed} {target} {shlex.quote(path)}"
        for model, seed, target, path in dg_runs()
    )


def uses_caption_clip(run=""):
    return run_config(config, run)["clip"]["pretrained"] == "captions"


def imports_clip(run=""):
    """A tag or local file, read once by clip_import. A variant naming another source reads
    it directly (there is one import per dataset: the main config's)."""
    own = run_config(config, run)
    same = keys_json(own, CLIP_SOURCE_KEYS) == keys_json(config, CLIP_SOURCE_KEYS)
    return same and own["clip"]["pretrained"] not in (None, "captions")


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


def uses_clusters(run=""):
    """The unsupervised mode: stage A's per-camera clusters in place of the dataset's labels."""
    return run_config(config, run)["train"]["camera_labels"] == "clusters"


def train_table(wildcards):
    """The training table stages 1-3 read: the ICS table, or the run's stage-A clusters."""
    if uses_clusters(wildcards.run):
        return f"{RESULTS}/{wildcards.run}clusters/train.parquet"
    return f"{RESULTS}/ics/train.parquet"


def prompt_run(run):
    """Variants whose stage-1 config and training table equal the main run's reuse the main
    run's prompts; on the ICS table, one whose keys equal an earlier run's reuses that run's
    (stage 1 reads no train.* key, so a variant's seeds share one prompt run). A run with a
    prior stage learns its prompts on its prior's features: with the first run of the same prior
    and stage-1 keys (the two guiding-loss signs of a seed share them)."""
    if uses_prior(run):
        own = (prior_run(run), keys_json(run_config(config, run), PROMPT_KEYS))
        return next(
            other
            for other in all_runs()
            if uses_prior(other)
            and (prior_run(other), keys_json(run_config(config, other), PROMPT_KEYS)) == own
        )
    same = keys_json(run_config(config, run), PROMPT_KEYS) == keys_json(config, PROMPT_KEYS)
    if same and uses_clusters(run) == uses_clusters() and not uses_prior():
        return ""
    if uses_clusters(run):  # each run clusters its own table
        return run
    return _first_prompt_run(keys_json(run_config(config, run), PROMPT_KEYS), run)


_PROMPT_RUNS = {}


def _first_prompt_run(keys, run):
    if keys not in _PROMPT_RUNS:
        _PROMPT_RUNS[keys] = next(
            other
            for other in all_runs()
            if not uses_clusters(other)
            and not uses_prior(other)
            and keys_json(run_config(config, other), PROMPT_KEYS) == keys
        )
    return _PROMPT_RUNS[keys]


def prompt_dir(wildcards):
    """Stage 1's folder as stages 2-3 read it; ``none`` for an image-only backbone (no stage
    1), so that the rules' commands stay the same for every backbone."""
    if not uses_text(wildcards.run):
        return "none"
    return f"{RESULTS}/{prompt_run(wildcards.run)}prompt"


def uses_text(run=""):
    """Whether the run's backbone has a text tower; an image-only one has no stage 1."""
    return not is_image_only(run_config(config, run)["clip"]["model"])


def text_features(wildcards):
    """Stage 1's texts as a stage-2/3 input; none for an image-only backbone."""
    if not uses_text(wildcards.run):
        return []
    return f"{prompt_dir(wildcards)}/text_features.parquet"


def uses_prior(run=""):
    """CLIP-FGDI's prior stage (DG mode, fgdi.prior_epochs > 0)."""
    return IS_DG and run_config(config, run)["fgdi"]["prior_epochs"] > 0


def prior_run(run):
    """The run whose prior stage ``run`` uses: the first with the same prior keys (e.g. the
    two guiding-loss signs of one seed share one prior)."""
    keys = keys_json(run_config(config, run), PRIOR_KEYS)
    if keys not in _PRIOR_RUNS:
        _PRIOR_RUNS[keys] = next(
            other
            for other in all_runs()
            if uses_prior(other) and keys_json(run_config(config, other), PRIOR_KEYS) == keys
        )
    return _PRIOR_RUNS[keys]


_PRIOR_RUNS = {}


def stage_clip_input(wildcards):
    """The CLIP stages 1 and 2 of a run start from: its prior stage's, or the pretrained one."""
    if uses_prior(wildcards.run):
        prior = f"{RESULTS}/{prior_run(wildcards.run)}prior/clip.pt"
        return {"clip": checked_checkpoint(prior)}
    return clip_input(wildcards)


def clip_input(wildcards):
    """The pipeline's copy of the pretrained CLIP (stage A, the prior stage and the reference
    rows start from it; stages 1 and 2 too, unless the run has a prior stage)."""
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


def block_job_name(block):
    """A stage-3 block's name in log and benchmark files (whatever its layout): first epoch."""
    return f"inter_epochs_{block[0]:03d}"


def benchmark_file(job, run=""):
    """Snakemake's benchmark file of a job (wall time, peak memory), read by the report."""
    return f"{RESULTS}/{run}benchmarks/{job}.tsv"


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
    """Stage 3's label sources beyond the association: the supervised run's given labels; in
    the unsupervised mode, where the truth table is (diagnostics only), as --ics-dir is not ics/."""
    if "labels" in input.keys():
        return f"--labels {input.labels}"
    if uses_clusters(wildcards.run):
        return f"--truth {RESULTS}/ics/train_truth.parquet"
    return ""


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
        f"{flag} {seed} {shlex.quote(path)}"
        for seed, path in zip(seeds, metrics_files, strict=True)
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
    """The main run's artifacts the report draws from; `report_args` names each for the code."""
    inputs = {
        "metrics": f"{RESULTS}/eval/metrics.json",
        "cmc": f"{RESULTS}/eval/cmc.parquet",
        "features": f"{RESULTS}/eval/features.parquet",
        "intra_log": f"{RESULTS}/intra/log.parquet",
        "epoch_logs": [f"{epoch_dir('', e)}/log.parquet" for e in inter_epochs()],
        "epoch_metrics": [f"{epoch_dir('', e)}/metrics.json" for e in inter_epochs()],
        "zeroshot": f"{RESULTS}/reference/zeroshot.json",
    }
    if uses_text():
        inputs["prompt_log"] = f"{RESULTS}/prompt/log.parquet"
    if uses_caption_clip():
        inputs["clip_log"] = f"{RESULTS}/clip/log.parquet"
        inputs["attribute_zero_shot"] = f"{RESULTS}/clip/zero_shot.json"
    return inputs


def report_jobs():
    """The main run's jobs upstream of the report, whose benchmark files give its timings."""
    jobs = ["synthesize"] if config["dataset"]["format"] == "synthetic" else []
    jobs.append("ics")
    if uses_caption_clip():
        jobs.append("clip_pretrain")
    elif imports_clip():
        jobs.append("clip_import")
    jobs += ["prompt"] if uses_text() else []
    jobs += ["intra", *map(block_job_name, inter_blocks()), "final", "evaluate"]
    return [*jobs, "zeroshot"]


def report_args(wildcards, input):
    """Every file the report reads, as its command-line flags.

    The benchmark files are named here but are not inputs: each is written by a job that is
    upstream of the report anyway, and a deleted one must not rerun the job that wrote it.
    """
    q = shlex.quote
    args = [
        f"--metrics {q(input.metrics)} --cmc {q(input.cmc)} --features {q(input.features)}",
        f"--training-log intra {q(input.intra_log)}",
        f"--reference zeroshot {q(input.zeroshot)}",
    ]
    if "prompt_log" in input.keys():
        args.insert(1, f"--training-log prompt {q(input.prompt_log)}")
    if "clip_log" in input.keys():
        args.append(f"--training-log clip {q(input.clip_log)}")
        args.append(f"--attribute-zero-shot {q(input.attribute_zero_shot)}")
    epochs = zip(inter_epochs(), input.epoch_logs, input.epoch_metrics, strict=True)
    args += [f"--epoch {epoch} {q(lg)} {q(metrics)}" for epoch, lg, metrics in epochs]
    args += [f"--benchmark {job} {q(benchmark_file(job))}" for job in report_jobs()]
    return " ".join(args)


def report_file(name, caption, category, run=""):
    return report(
        f"{RESULTS}/{run}report/{name}", caption=f"../report/{caption}.rst", category=category
    )


def uses_refined_clusters(run=""):
    """CALR's stage B (train.labels: refined): every stage-3 epoch measures its clusters."""
    return run_config(config, run)["train"]["labels"] == "refined"


def calr_plots(run=""):
    """The run's CALR Fig. 5 plot, in the one mode that measures its clusters; [] otherwise."""
    return [f"{RESULTS}/{run}report/calr_clusters.png"] if uses_refined_clusters(run) else []


def stage_b_metrics(wildcards):
    """metrics.json of every stage-3 epoch of the job's run, for the CALR cluster plot."""
    return [f"{epoch_dir(wildcards.run, e)}/metrics.json" for e in inter_epochs(wildcards.run)]


def epoch_metrics_args(wildcards, input):
    epochs = zip(inter_epochs(wildcards.run), input.epochs, strict=True)
    return " ".join(f"--epoch {epoch} {shlex.quote(path)}" for epoch, path in epochs)


def all_targets():
    if IS_DG:
        return [f"{RESULTS}/dg/table.md"]
    targets = [
        f"{RESULTS}/eval/metrics.json",
        f"{RESULTS}/reference/zeroshot.json",
        f"{RESULTS}/report/metrics.md",
        *epoch_artifacts(),
    ]
    if uses_clusters():
        targets.append(f"{RESULTS}/clusters/quality.json")
    return targets + calr_plots()


def usl_targets(variant):
    """`snakemake usl` / `snakemake calr`: an unsupervised variant at the first seed, with
    its stage-A cluster quality and every stage-3 epoch (with CALR's stage B, its Fig. 5 plot),
    beside the zero-shot row."""
    run = f"ablation/{variant}-s{config['ablation']['seeds'][0]}/"
    return [
        f"{RESULTS}/{run}eval/metrics.json",
        f"{RESULTS}/{run}clusters/quality.json",
        f"{RESULTS}/reference/zeroshot.json",
        *epoch_artifacts(run),
        *calr_plots(run),
    ]


# CALR's component ablation (`snakemake calr_ablation`): the calr variant and the runs that
# switch one component off, those of them the config names (variants or sweeps).
CALR_ABLATION_RUNS = ("calr", "calr-norefine", "calr-noalign", "calr-noweights")


def calr_ablation_runs():
    """(variant, seed, eval metrics, last stage-3 epoch's metrics) of every run of the table."""
    ablation = config["ablation"]
    named = {**ablation["variants"], **ablation["sweeps"]}
    rows = []
    for variant in CALR_ABLATION_RUNS:
        if variant not in named:
            continue
        for seed in ablation["seeds"]:
            run = f"ablation/{variant}-s{seed}/"
            last = inter_epochs(run)[-1]
            rows.append(
                (
                    variant,
                    seed,
                    f"{RESULTS}/{run}eval/metrics.json",
                    f"{epoch_dir(run, last)}/metrics.json",
                )
            )
    if not rows:
        raise ValueError(
            f"ablation.variants and ablation.sweeps name none of {list(CALR_ABLATION_RUNS)}: "
            "the CALR ablation needs at least calr"
        )
    return rows


def calr_ablation_args(wildcards):
    return " ".join(
        f"--run {variant} {seed} {shlex.quote(metrics)} {shlex.quote(epoch)}"
        for variant, seed, metrics, epoch in calr_ablation_runs()
    )
