"""CLI commands of the training and evaluation stages; heavy imports stay inside handlers."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ccafl.commands import command
from ccafl.errors import UserError
from ccafl.io import write_json
from ccafl.settings import Settings

log = logging.getLogger("ccafl")


def _paths(*names: str):
    helps = {
        "ics_dir": "folder of the ics rule's tables (results/<name>/ics)",
        "prompt_dir": (
            "folder of the prompt rule's outputs (results/<name>/prompt); 'none' for an "
            "image-only backbone (clip.model: resnet50-imagenet), which has no prompts"
        ),
        "clip": (
            "the pipeline's copy of the pretrained CLIP: results/<name>/clip/pretrained.pt "
            "(clip.pretrained: captions) or results/<name>/clip/imported.pt (a tag or a local "
            "file); without it a tag or file named by clip.pretrained is read directly"
        ),
        "out_dir": "folder for the stage's outputs",
    }

    def arguments(p: argparse.ArgumentParser) -> None:
        for name in names:
            flag = "--" + name.replace("_", "-")
            kind = _prompt_dir if name == "prompt_dir" else Path
            p.add_argument(flag, type=kind, required=name != "clip", help=helps[name])

    return arguments


def _prompt_dir(value: str) -> Path | None:
    return None if value == "none" else Path(value)


def _clip_pretrain_args(p: argparse.ArgumentParser) -> None:
    _paths("out_dir")(p)
    p.add_argument(
        "--captions-root",
        type=Path,
        help="the synthetic world whose captions.parquet and photos to read (default: "
        "dataset.root; in the DG mode the domain named by dg.captions)",
    )


@command("pretrain the tiny CLIP on the synthetic captions", _clip_pretrain_args)
def clip_pretrain(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.training.clip_pretrain import pretrain_clip
    from ccafl.training.zero_shot import zero_shot_attribute_retrieval

    root = args.captions_root or settings.dataset.root
    pretrain_clip(settings, root, args.out_dir)
    zero_shot = zero_shot_attribute_retrieval(settings, root, args.out_dir / "pretrained.pt")
    write_json(zero_shot, args.out_dir / "zero_shot.json")


def _clip_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (imported.pt)")


@command(
    "read the pretrained CLIP of clip.pretrained (tag or local file) once into the results",
    _clip_import_args,
)
def clip_import(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.models.factory import import_clip

    summary = import_clip(settings.clip, args.out)
    log.info("CLIP weights imported: %s", summary)


def _prompt_args(p: argparse.ArgumentParser) -> None:
    _paths("ics_dir", "clip", "out_dir")(p)
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute frozen image features every batch (to measure what the cache saves)",
    )
    p.add_argument(
        "--domain-text",
        type=Path,
        help="the DG mode: write each gid's domain-relevant text feature here (empty when "
        "fgdi.domain_prompts is off)",
    )


@command("stage 1: learn prompt tokens per ICS id (Eq. 1-3)", _prompt_args)
def prompt(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.training.prompt import run_prompt

    run_prompt(
        settings,
        settings.dataset.root,
        args.ics_dir,
        args.clip,
        args.out_dir,
        use_cache=not args.no_cache,
        domain_text_out=args.domain_text,
    )


@command(
    "stage A (unsupervised mode): cluster each camera, train on the clusters, per epoch (CALR)",
    _paths("ics_dir", "clip", "out_dir"),
)
def local_clusters(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl import distributed
    from ccafl.training.local import read_images, run_local_clusters

    table = args.ics_dir / "train.parquet"
    distributed.init_from_env()
    metrics = run_local_clusters(settings, read_images(table), args.clip, args.out_dir, str(table))
    log.info("stage A: %s clusters (%s singletons) in %.0f s", metrics["final"]["clusters"],
             metrics["final"]["singletons"], metrics["seconds"])  # fmt: skip
    distributed.shutdown()


def _cluster_quality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clusters", type=Path, required=True, help="local_clusters.parquet")
    p.add_argument("--truth", type=Path, required=True, help="the ics rule's train_truth.parquet")
    p.add_argument("--out", type=Path, required=True, help="quality JSON to write")


@command(
    "diagnostics: BCubed and pairwise quality of stage A's local clusters (true ids)",
    _cluster_quality_args,
)
def cluster_quality(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.association.diagnostics import local_cluster_quality

    quality = local_cluster_quality(args.clusters, args.truth)
    write_json(quality, args.out)
    if quality:
        log.info("local clusters: BCubed P %.3f R %.3f F %.3f, expansion %.2f",
                 quality["bcubed_precision"], quality["bcubed_recall"],
                 quality["bcubed_f_score"], quality["expansion"])  # fmt: skip


def _prior_args(p: argparse.ArgumentParser) -> None:
    _paths("ics_dir", "clip", "out_dir")(p)
    p.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="the true person label of each gid (gid, cluster): the supervised_labels rule's table",
    )


@command(
    "DG mode: CLIP-FGDI's prior stage, the image encoder trained with ID + triplet on the "
    "sources' person ids before the prompts (fgdi.prior_epochs)",
    _prior_args,
)
def prior(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl import distributed
    from ccafl.association.pseudo_labels import read_given_labels
    from ccafl.training.prior import run_prior
    from ccafl.training.state import TrainingData

    distributed.init_from_env()
    data = TrainingData.load(settings.dataset.root, args.ics_dir, None)
    labels = read_given_labels(args.labels, data.n_gids)
    metrics = run_prior(settings, data, labels, args.clip, args.out_dir)
    log.info("prior stage: %s", metrics)
    distributed.shutdown()


@command(
    "stage 2: intra-camera learning, epochs 1..E_intra (Eq. 4-11, 17)",
    _paths("ics_dir", "prompt_dir", "clip", "out_dir"),
)
def intra(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl import distributed
    from ccafl.training.intra import run_intra
    from ccafl.training.state import TrainingData

    distributed.init_from_env()
    data = TrainingData.load(settings.dataset.root, args.ics_dir, args.prompt_dir)
    metrics = run_intra(settings, data, args.clip, args.out_dir)
    log.info("stage 2: %s", metrics)
    distributed.shutdown()


def _inter_args(p: argparse.ArgumentParser) -> None:
    _paths("ics_dir", "prompt_dir")(p)
    p.add_argument(
        "--clip", type=Path, help="not read: stage 3 rebuilds the model from --previous only"
    )
    p.add_argument(
        "--epoch",
        type=int,
        nargs="+",
        required=True,
        help="1-based epoch(s) to train: one, or a block of consecutive epochs run in one job",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        nargs="+",
        required=True,
        help="output folder of each epoch, in the order of --epoch",
    )
    p.add_argument("--previous", type=Path, required=True, help="checkpoint of the epoch before")
    p.add_argument(
        "--labels",
        type=Path,
        help="fixed cross-camera labels per gid (gid, cluster) in place of the association: "
        "the supervised reference run (its table comes from the supervised_labels rule)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="diagnostics only: the ics rule's train_truth.parquet, when --ics-dir holds "
        "another training table (the unsupervised mode's); default: --ics-dir's own",
    )
    p.add_argument(
        "--domain-text",
        type=Path,
        help="the DG mode with fgdi.domain_prompts: stage 1's domain-relevant text features, "
        "for the guiding loss",
    )


@command(
    "stage 3: association + inter-camera learning, one epoch or a block (Eq. 12-20)",
    _inter_args,
)
def inter_epoch(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl import distributed
    from ccafl.association.diagnostics import EpochDiagnostics
    from ccafl.association.pseudo_labels import read_given_labels
    from ccafl.inference.checkpoints import load_checkpoint
    from ccafl.training.inter import run_inter_epochs
    from ccafl.training.state import TrainingData

    if len(args.epoch) != len(args.out_dir):
        raise SystemExit("inter-epoch: give one --out-dir per --epoch")
    # Before anything heavy: the previous epoch's checkpoint is readable and is epoch - 1.
    load_checkpoint(args.previous, epoch=args.epoch[0] - 1, mmap=True)
    distributed.init_from_env()
    data = TrainingData.load(settings.dataset.root, args.ics_dir, args.prompt_dir)
    if args.domain_text is not None:
        data = data.with_domain_text(args.domain_text)
    given = None if args.labels is None else read_given_labels(args.labels, data.n_gids)
    out_dirs = dict(zip(args.epoch, args.out_dir, strict=True))
    truth = args.truth or args.ics_dir / "train_truth.parquet"
    diagnostics = EpochDiagnostics(data.train, truth, out_dirs)
    run_inter_epochs(
        settings,
        data,
        args.previous,
        args.clip,
        args.epoch,
        args.out_dir,
        given_labels=given,
        on_epoch_end=diagnostics,
    )
    distributed.shutdown()


def _final_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="last epoch's checkpoint")
    p.add_argument("--out", type=Path, required=True, help="model file to write")


@command("package the last checkpoint as a standalone inference model", _final_args)
def final(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.inference.checkpoints import load_checkpoint
    from ccafl.inference.models import model_from_checkpoint
    from ccafl.io import save_torch
    from ccafl.models.factory import final_model_payload

    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint)
    # The checkpoint's own config (the run's), not this command's: model.pt must rebuild it.
    payload = final_model_payload(
        model, Settings.from_config(checkpoint["config"]), epoch=checkpoint["epoch"]
    )
    save_torch(payload, args.out)
    log.info("final model (epoch %d) written to %s", checkpoint["epoch"], args.out)


def _loader_workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--loader-workers",
        type=int,
        metavar="N",
        help="DataLoader workers of the feature extraction (default: train.num_workers); the "
        "rules pass it outside the stage's config keys, since the features do not depend on it",
    )


def with_loader_workers(settings: Settings, workers: int | None) -> Settings:
    """``settings`` with train.num_workers set to ``workers`` (unchanged when None).

    Why: the evaluation's loader reads train.num_workers, a key that changes no feature; the
    rules pass it on its own so that changing it does not rerun an evaluation.
    """
    if workers is None:
        return settings
    return settings.replace(train=settings.train.replace(num_workers=workers))


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _paths("ics_dir", "clip", "out_dir")(p)
    _loader_workers_arg(p)
    p.add_argument(
        "--model",
        type=Path,
        help="final model.pt or a training checkpoint; omit to evaluate the raw CLIP encoder",
    )
    p.add_argument("--label", default=None, help="model name written into metrics.json")


@command("Market-1501 protocol metrics of a model on query/gallery", _evaluate_args)
def evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.inference.models import load_model_for_eval
    from ccafl.retrieval import evaluate_model

    settings = with_loader_workers(settings, args.loader_workers)
    model = load_model_for_eval(settings, args.model, args.clip)
    label = args.label or (str(args.model) if args.model else f"raw {settings.clip.model}")
    evaluate_model(
        model,
        settings,
        settings.dataset.root,
        args.ics_dir,
        args.out_dir,
        label=label,
        neck=settings.eval.neck,
        distance=settings.eval.distance,
    )


def _variant_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", choices=["variants", "sweeps"], default="variants")
    p.add_argument(
        "--run",
        nargs=3,
        action="append",
        default=[],
        metavar=("VARIANT", "SEED", "METRICS"),
        help="one run: its variant, seed and eval/metrics.json (repeat per run)",
    )
    p.add_argument(
        "--reference",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON"),
        help="a reference evaluation (zeroshot, untrained) to list above the variants",
    )
    p.add_argument("--out", type=Path, required=True, help="markdown table to write")
    p.add_argument("--csv", type=Path, required=True, help="CSV of every run to write")


@command(
    "collect mAP/rank-1 of every ablation variant (or sweep) and seed into a table",
    _variant_table_args,
)
def variant_table(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.ablation import write_variant_table

    runs = {(variant, int(seed)): Path(path) for variant, seed, path in args.run}
    references = dict(args.reference)
    # The ablation's run configs are config algebra on the whole dict (ccafl.ablation).
    table = write_variant_table(settings.raw, runs, args.out, args.csv, args.group, references)
    log.info("%d runs collected into %s", len(table), args.out)


def _calr_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        nargs=4,
        action="append",
        default=[],
        metavar=("VARIANT", "SEED", "METRICS", "EPOCH_METRICS"),
        help="one CALR run: its variant, seed, eval/metrics.json and its last stage-3 epoch's "
        "metrics.json (repeat per run)",
    )
    p.add_argument("--zeroshot", type=Path, help="the zero-shot reference JSON, listed first")
    p.add_argument("--out", type=Path, required=True, help="markdown table to write")
    p.add_argument("--csv", type=Path, required=True, help="CSV of every run to write")


@command(
    "CALR's component ablation: refinement, camera alignment, entropy weights on or off, "
    "mean ± std over seeds with the last epoch's cluster F-scores",
    _calr_table_args,
)
def calr_table(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.ablation import write_calr_component_table

    runs = {(v, int(s)): (Path(m), Path(e)) for v, s, m, e in args.run}
    table = write_calr_component_table(settings.raw, runs, args.out, args.csv, args.zeroshot)
    log.info("%d CALR runs collected into %s", len(table), args.out)


def _reference_args(p: argparse.ArgumentParser) -> None:
    _paths("ics_dir", "clip")(p)
    _loader_workers_arg(p)
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    p.add_argument(
        "--train-table",
        type=Path,
        help="the training table whose images set the calibrated BN-necks (default: "
        "--ics-dir's train.parquet; in the DG mode the pooled sources', never a target's)",
    )
    p.add_argument(
        "--untrained",
        action="store_true",
        help="a randomly initialised network of the same architecture instead of the CLIP",
    )


@command(
    "reference rows: the pretrained CLIP with no ReID training (or an untrained network), "
    "evaluated per retrieval feature",
    _reference_args,
)
def reference(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.reference import reference_metrics

    result = reference_metrics(
        with_loader_workers(settings, args.loader_workers),
        args.clip,
        settings.dataset.root,
        args.ics_dir,
        untrained=args.untrained,
        train_table=args.train_table,
    )
    write_json(result, args.out)
    best = result["best"]
    log.info(
        "%s: best feature %s (%s): mAP %.1f%%",
        result["source"],
        best["feature"],
        best["way"],
        100 * best["mAP"],
    )


def _supervised_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=Path, required=True, help="the ics rule's train.parquet")
    p.add_argument("--truth", type=Path, required=True, help="the ics rule's train_truth.parquet")
    p.add_argument("--out", type=Path, required=True, help="labels table to write")


@command(
    "cross-camera labels per gid from the truth table, for the supervised reference run only",
    _supervised_args,
)
def supervised_labels(args: argparse.Namespace, settings: Settings) -> None:
    import pandas as pd

    from ccafl.association.diagnostics import supervised_labels as labels_from_truth
    from ccafl.io import write_parquet

    table = labels_from_truth(pd.read_parquet(args.train), args.truth)
    write_parquet(table, args.out)
    log.info("%d gids, %d people", len(table), table["cluster"].nunique())


def _calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zeroshot", type=Path, required=True, help="reference/zeroshot.json")
    p.add_argument("--untrained", type=Path, required=True, help="reference/untrained.json")
    p.add_argument(
        "--ccafl",
        nargs=2,
        action="append",
        required=True,
        metavar=("SEED", "METRICS"),
        help="eval/metrics.json of a full CCAFL run at a training seed (repeat per seed)",
    )
    p.add_argument(
        "--supervised",
        nargs=2,
        action="append",
        required=True,
        metavar=("SEED", "METRICS"),
        help="eval/metrics.json of a supervised reference run (repeat per seed)",
    )
    p.add_argument(
        "--usl",
        nargs=2,
        action="append",
        metavar=("SEED", "METRICS"),
        help="eval/metrics.json of an unsupervised run, train.camera_labels: clusters "
        "(repeat per seed; optional)",
    )
    p.add_argument("--out", type=Path, required=True, help="markdown table to write")
    p.add_argument("--json", type=Path, required=True, help="the same numbers as JSON, to write")


@command(
    "zero-shot, untrained, CCAFL, supervised (and unsupervised) mAP side by side, with the "
    "ratios the benchmark must show",
    _calibration_args,
)
def calibration(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.ablation import calibration_table, write_calibration

    result = calibration_table(
        args.zeroshot,
        args.untrained,
        {int(seed): path for seed, path in args.ccafl},
        {int(seed): path for seed, path in args.supervised},
        {int(seed): path for seed, path in args.usl or []},
    )
    write_calibration(result, args.out, args.json)
    for ratio in result["ratios"]:
        log.info(
            "%s: %.2f (target >= %s)%s",
            ratio["ratio"],
            ratio["value"],
            ratio["target"],
            "" if ratio["met"] in (True, None) else "  NOT MET",
        )


def _dg_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        nargs=4,
        action="append",
        default=[],
        metavar=("MODEL", "SEED", "TARGET", "METRICS"),
        help="one evaluation: the model's name, its training seed, the target and its "
        "metrics JSON (eval metrics.json, or a reference JSON whose best feature counts)",
    )
    p.add_argument(
        "--from",
        dest="tables",
        type=Path,
        action="append",
        default=[],
        metavar="TABLE_JSON",
        help="the evaluations of an earlier DG table (its table.json; repeat: one per "
        "held-out run of a leave-one-out, which then share one Average)",
    )
    p.add_argument("--out", type=Path, required=True, help="markdown table to write")
    p.add_argument("--csv", type=Path, required=True, help="CSV to write")
    p.add_argument("--json", type=Path, required=True, help="JSON to write")


@command("DG mode: every model on every held-out target, and the average row", _dg_table_args)
def dg_table(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.dg_table import recorded_runs, write_dg_table

    runs = [(model, int(seed), target, Path(path)) for model, seed, target, path in args.run]
    for table_json in args.tables:
        runs += recorded_runs(table_json)
    if not runs:
        raise UserError("dg-table: no evaluation given; pass --run or --from")
    table = write_dg_table(runs, args.out, args.csv, args.json)
    log.info("%d rows written to %s", len(table), args.out)
