"""`python -m ccafl <stage>`: the commands the Snakemake rules call, one per pipeline stage.

Every command takes the same configuration: ``--config`` (a YAML file such as
config/config.yaml) and/or ``--set`` (JSON merged on top; the rules pass the config sections a
stage depends on this way, so Snakemake reruns a stage when exactly those change).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ccafl.config import ConfigError, load_config

Handler = Callable[[argparse.Namespace, dict], None]
_COMMANDS: dict[str, tuple[str, Handler, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]):
    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = (help_text, handler, arguments)
        return handler

    return register


def _out_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", required=True, type=Path, help="folder for the stage's outputs")


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="dataset root to write (default: dataset.root)")


@command(
    "synthesize", "render the embedded synthetic benchmark (Market-1501 layout)", _synthesize_args
)
def _synthesize(args: argparse.Namespace, config: dict) -> None:
    from ccafl.data.synthetic import SyntheticSpec, synthesize

    root = args.out or Path(config["dataset"]["root"])
    summary = synthesize(root, SyntheticSpec.from_config(config["synthetic"]))
    logging.info("synthetic benchmark written to %s: %s", root, summary)


@command("ics", "ICS relabelling: train/query/gallery tables, truth table, summary", _out_dir)
def _ics(args: argparse.Namespace, config: dict) -> None:
    from ccafl.data.ics import build_ics

    data = config["dataset"]
    summary = build_ics(data["root"], data["format"], args.out_dir, data["verify_images"])
    logging.info(
        "%d cameras, %d ICS ids (%s per camera), %d training images, %.1f s",
        summary["n_cameras"],
        summary["n_gids"],
        "+".join(map(str, summary["train"]["ids_per_camera"])),
        summary["train"]["images"],
        summary["seconds"],
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccafl",
        description=(
            "CCAFL pipeline stages (CLIP-based camera-agnostic feature learning for "
            "intra-camera supervised person ReID). Normally run by Snakemake "
            "(`snakemake --cores all`); each command can also be run by hand."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for name, (help_text, _, arguments) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, help="YAML config (default: schema defaults)")
        p.add_argument("--set", dest="overrides", help="JSON merged over the config")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    _register_stage_commands()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        config = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        print(f"ccafl {args.command}: {error}", file=sys.stderr)
        return 2
    _, handler, _ = _COMMANDS[args.command]
    from ccafl.data.datasets import DatasetError

    try:
        handler(args, config)
    except DatasetError as error:
        print(f"ccafl {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def _register_stage_commands() -> None:
    """Training stages register themselves in their own modules (imported lazily here)."""
    import ccafl.report_cli  # noqa: F401
    import ccafl.search_cli  # noqa: F401
    import ccafl.stages  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
