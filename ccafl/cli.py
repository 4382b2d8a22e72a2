"""`python -m ccafl <stage>`: the commands the Snakemake rules call, one per pipeline stage.

Every command takes the same configuration: ``--config`` (a YAML file such as
config/config.yaml) and/or ``--set`` (JSON merged on top; the rules pass the config sections a
stage depends on this way, so Snakemake reruns a stage when exactly those change).

An error the user can fix (config, dataset, weights, checkpoint, a missing input file) ends the
command with exit status 2 and one line naming the key or file and what to do; ``--debug`` (or
``CCAFL_DEBUG=1`` in the environment, which reaches the jobs Snakemake starts) shows the
traceback instead. Any other exception is a bug of ccafl and always keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from pathlib import Path

from ccafl.checks import check_config
from ccafl.commands import Handler
from ccafl.config import load_config, parse_overrides, restrict_to
from ccafl.errors import UserError
from ccafl.logs import redirect_output, setup_logging
from ccafl.settings import Settings

# The command table: each command's handler as "module:function". A handler carries its help
# line and its arguments (ccafl.commands.command); its module keeps heavy imports inside the
# handler, so building the parser stays fast.
COMMANDS = {
    "synthesize": "ccafl.data_cli:synthesize",
    "ics": "ccafl.data_cli:ics",
    "dg-target": "ccafl.data_cli:dg_target",
    "fetch-weights": "ccafl.data_cli:fetch_weights",
    "clip-pretrain": "ccafl.stages:clip_pretrain",
    "clip-import": "ccafl.stages:clip_import",
    "prior": "ccafl.stages:prior",
    "prompt": "ccafl.stages:prompt",
    "local-clusters": "ccafl.stages:local_clusters",
    "cluster-quality": "ccafl.stages:cluster_quality",
    "intra": "ccafl.stages:intra",
    "inter-epoch": "ccafl.stages:inter_epoch",
    "final": "ccafl.stages:final",
    "evaluate": "ccafl.stages:evaluate",
    "reference": "ccafl.stages:reference",
    "supervised-labels": "ccafl.stages:supervised_labels",
    "variant-table": "ccafl.stages:variant_table",
    "calibration": "ccafl.stages:calibration",
    "calr-table": "ccafl.stages:calr_table",
    "dg-table": "ccafl.stages:dg_table",
    "report": "ccafl.report_cli:report",
    "calr-clusters-plot": "ccafl.report_cli:calr_clusters_plot",
    "demo-summary": "ccafl.report_cli:demo_summary",
    "open-report": "ccafl.report_cli:open_report",
    "embed": "ccafl.search_cli:embed",
    "index": "ccafl.search_cli:index",
    "search": "ccafl.search_cli:search",
    "export": "ccafl.search_cli:export",
}


def handler_of(name: str) -> Handler:
    """The handler function the command table names for command ``name``."""
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


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
    for name in COMMANDS:
        handler = handler_of(name)
        p = sub.add_parser(name, help=handler.help_text, description=handler.help_text)
        p.add_argument("--config", type=Path, help="YAML config (default: schema defaults)")
        p.add_argument("--set", dest="overrides", help="JSON merged over the config")
        p.add_argument(
            "--stage-keys",
            action="store_true",
            help="the --set JSON holds exactly the config keys this stage reads, as the "
            "workflow's rules pass them after checking the whole config: the cross-field "
            "checks then cover these keys only",
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        p.add_argument(
            "--debug",
            action="store_true",
            help="show the traceback of an error instead of its one line (or CCAFL_DEBUG=1)",
        )
        p.add_argument(
            "--log",
            type=Path,
            help="write all output into this file; warnings and errors also reach the terminal",
        )
        handler.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CCAFL_DEBUG", "") not in ("", "0")
    terminal = redirect_output(args.log) if args.log else None
    setup_logging(args.command, args.verbose, terminal)
    # Snakemake stops a job with SIGTERM: leave through Python's exit so that `finally`
    # blocks (atomic writes removing their temporary files) still run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        # The config is read once, here: every command below gets its typed sections.
        handler_of(args.command)(args, Settings.from_config(_stage_config(args)))
    except Exception as error:
        line = user_error_line(error)
        if line is None or debug:
            raise
        message = f"ccafl {args.command}: error: {line}"
        print(message, file=sys.stderr, flush=True)
        if terminal is not None and os.environ.get("RANK", "0") == "0":
            print(message, file=terminal, flush=True)
        return 2
    return 0


def _stage_config(args: argparse.Namespace) -> dict:
    """The validated config; with ``--stage-keys`` under ``CCAFL_STRICT_CONFIG=1``, only the
    keys ``--set`` names.

    The strict form is for the end-to-end tests: every rule passes its stage the config keys
    the stage reads (``--set ... --stage-keys``), and a stage reading a key its rule left out
    then fails with a KeyError instead of silently running with the default (which Snakemake
    would not rerun for).
    """
    given = parse_overrides(args.overrides) if args.overrides else {}
    stage_keys = args.stage_keys and args.config is None
    config = check_config(load_config(args.config, args.overrides), given if stage_keys else None)
    strict = os.environ.get("CCAFL_STRICT_CONFIG", "") not in ("", "0")
    if strict and stage_keys:
        config = restrict_to(config, given)
    return config


def user_error_line(error: BaseException) -> str | None:
    """The one line for an error the user can fix; None for a bug (keeps its traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on device writing {error.filename or 'a file'}: free some space"
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
        what = str(error).splitlines()[0] if str(error) else type(error).__name__
        if error.filename is not None:
            kind = "file not found" if isinstance(error, FileNotFoundError) else error.strerror
            what = f"{kind}: {error.filename}"
        elif isinstance(error, FileNotFoundError) and "not found" not in what.lower():
            what = f"file not found: {what}"  # pandas gives just the path
        if isinstance(error, FileNotFoundError):
            return (
                f"{what} (an input of this stage: run the stage that writes it, as snakemake "
                "does, or correct the path)"
            )
        return f"{what} (check the path and its permissions)"
    return None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
