"""CLI commands of the training and evaluation stages; heavy imports stay inside handlers."""

from __future__ import annotations
