"""CLI commands of the data stages: render the synthetic benchmark, ICS relabelling, fetch
CLIP weights. Heavy imports stay inside the handlers."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ccafl.commands import command
from ccafl.errors import UserError
from ccafl.settings import Settings


def _out_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", required=True, type=Path, help="folder for the stage's outputs")


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="dataset root to write (default: dataset.root)")
    p.add_argument(
        "--domain",
        help="dataset.format pooled: render this synthetic domain of dg.domains (the top-level "
        "synthetic section with the domain's overrides) into <dataset.root>/<domain>",
    )


@command("render the embedded synthetic benchmark (Market-1501 layout)", _synthesize_args)
def synthesize(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    if args.domain is not None:
        from ccafl.data.pooled import domains_from_config, synthetic_spec_config

        domain = domains_from_config(settings.raw).get(args.domain)
        if domain is None or domain.format != "synthetic":
            raise UserError(
                f"dg.domains.{args.domain}: not a synthetic domain of this config; synthesize "
                "renders only domains with format: synthetic"
            )
        spec_config, root = synthetic_spec_config(settings.raw, args.domain), domain.root
    elif settings.dataset.format != "synthetic":
        raise UserError(
            f"dataset.format is {settings.dataset.format}: synthesize writes only the "
            "synthetic benchmark (dataset.format: synthetic), never into a real dataset's root"
        )
    else:
        spec_config, root = settings.raw["synthetic"], Path(settings.dataset.root)
    root = args.out or root
    summary = synthesize(root, SyntheticSpec.from_config(spec_config))
    logging.info("synthetic benchmark written to %s: %s", root, summary)


@command("ICS relabelling: train/query/gallery tables, truth table, summary", _out_dir)
def ics(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.data.ics import build_ics

    data = settings.dataset
    if data.format == "pooled":
        from ccafl.data.pooled import domains_from_config, pool_sources

        domains = domains_from_config(settings.raw)
        sources = [domains[name] for name in settings.raw["dg"]["sources"]]
        summary = pool_sources(sources, data.root, args.out_dir, data.verify_images)
    else:
        summary = build_ics(data.root, data.format, args.out_dir, data.verify_images, data.layout)
    logging.info(
        "%d cameras, %d ICS ids (%s per camera), %d training images, %.1f s",
        summary["n_cameras"],
        summary["n_gids"],
        "+".join(map(str, summary["train"]["ids_per_camera"])),
        summary["train"]["images"],
        summary["seconds"],
    )


def _dg_target_args(p: argparse.ArgumentParser) -> None:
    _out_dir(p)
    p.add_argument("--target", required=True, help="a name of dg.targets")


@command(
    "DG mode: a held-out target's query and gallery tables (its training split is never read)",
    _dg_target_args,
)
def dg_target(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.data.pooled import domains_from_config, target_tables

    if args.target not in settings.raw["dg"]["targets"]:
        raise UserError(
            f"--target {args.target}: not in dg.targets {settings.raw['dg']['targets']}"
        )
    target = domains_from_config(settings.raw)[args.target]
    data = settings.dataset
    summary = target_tables(target, data.root, args.out_dir, data.verify_images)
    logging.info("target %s: %s", args.target, summary)


def _fetch_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="open_clip model name (default: clip.model)")
    p.add_argument("--pretrained", help="open_clip pretrained tag (default: clip.pretrained)")


@command(
    "download open_clip weights into the local cache once (needs internet); runs never download",
    _fetch_weights_args,
)
def fetch_weights(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.models.weights import fetch_hub_weights

    model = args.model or settings.clip.model
    tag = args.pretrained or settings.clip.pretrained
    path = fetch_hub_weights(model, tag)
    logging.getLogger("ccafl").info("open_clip weights %s/%s: %s", model, tag, path)
