"""What the command modules share: the `command` decorator that gives a handler its help line
and its arguments.

A leaf module: ccafl.data_cli, ccafl.stages, ccafl.report_cli and ccafl.search_cli import it,
and ccafl.cli finds their handlers through its command table ("module:function"), so no
command module imports the CLI back.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ccafl.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], None]
Arguments = Callable[[argparse.ArgumentParser], None]


def command(help_text: str, arguments: Arguments | None = None) -> Callable[[Handler], Handler]:
    """Attach ``help_text`` and the ``arguments`` builder to a command handler."""

    def attach(handler: Handler) -> Handler:
        handler.help_text = help_text
        handler.add_arguments = arguments or (lambda parser: None)
        return handler

    return attach
