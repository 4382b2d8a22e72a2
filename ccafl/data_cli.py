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


@command("render the embedded synthetic benchmark (Market-1501 layout)", _synthesize_args)
def synthesize(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    if settings.dataset.format != "synthetic":
        raise UserError(
            f"dataset.format is {settings.dataset.format}: synthesize writes only the "
            "synthetic benchmark (dataset.format: synthetic), never into a real dataset's root"
        )
    root = args.out or Path(settings.dataset.root)
    summary = synthesize(root, SyntheticSpec.from_config(settings.raw["synthetic"]))
    logging.info("synthetic benchmark written to %s: %s", root, summary)


@command("ICS relabelling: train/query/gallery tables, truth table, summary", _out_dir)
def ics(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.data.ics import build_ics

    data = settings.dataset
    summary = build_ics(data.root, data.format, args.out_dir, data.verify_images, data.layout)
    logging.info(
        "%d cameras, %d ICS ids (%s per camera), %d training images, %.1f s",
        summary["n_cameras"],
        summary["n_gids"],
        "+".join(map(str, summary["train"]["ids_per_camera"])),
        summary["train"]["images"],
        summary["seconds"],
    )


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
