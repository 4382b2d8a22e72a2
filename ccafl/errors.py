"""Errors a user can cause and fix: the CLI and the workflow print them as one line.

Anything that is not a `UserError` (or an `OSError` naming a file) is a bug of ccafl and keeps
its traceback. Each message names the file or config key at fault and says what to do.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, dataset, weights, checkpoint): one line, naming the culprit and fix."""


class WeightsError(UserError, RuntimeError):
    """``clip.pretrained`` cannot be resolved to weights on this machine.

    A RuntimeError too, as the weight loaders raised before it existed.
    """


class CheckpointError(UserError):
    """A training checkpoint that is missing, corrupt, truncated or of another format."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """``clip.pretrained`` names a local file that does not exist."""
