"""Rebuilding a ReID model from a file: a final model.pt, a training checkpoint, or the raw CLIP.

One function builds the architecture bare and loads a payload's weights
(`model_from_checkpoint`); the final stage, the evaluation, the report and the search commands
all rebuild through it.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from torch import nn

from ccafl.inference.checkpoints import load_checkpoint
from ccafl.models.backbone import ReIDEncoder, register_model_configs
from ccafl.models.factory import build_reid_model, checkpoint_quick_gelu
from ccafl.settings import Settings


def model_from_checkpoint(payload: dict) -> ReIDEncoder:
    """The ReID model of a checkpoint or model-file payload: its config's architecture, built
    without pretrained weights, with the activation it recorded, and its weights loaded.

    A final model file also carries its open_clip architecture, registered here when this
    installation does not know it, so the file is portable.
    """
    settings = Settings.from_config(payload["config"])  # the file's own config: an edge
    name = settings.clip.model
    if name not in register_model_configs() and payload.get("clip_model_config"):
        _register_config(name, payload["clip_model_config"])
    model = build_reid_model(settings, weights=False, quick_gelu=checkpoint_quick_gelu(payload))
    model.load_state_dict(payload["model"])
    return model


def _register_config(name: str, model_config: dict) -> None:
    import json
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ccafl-clip-config-"))
    (folder / f"{name}.json").write_text(json.dumps(model_config))
    open_clip.add_model_config(folder)


def load_reid_model(path: str | Path, device: str | torch.device = "cpu") -> ReIDEncoder:
    """Build the trained ReID model of ``results/<name>/final/model.pt`` in one call.

    ``model(images)`` returns ``(f, p)``; ``f`` is the retrieval feature.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return model_from_checkpoint(payload).to(device).eval()


def load_model_for_eval(
    settings: Settings, model_path: str | Path | None, clip_path: str | Path | None
) -> nn.Module:
    """A final model.pt, a training checkpoint, or (no path) the raw CLIP image encoder."""
    if model_path is None:
        return build_reid_model(settings, clip_path)
    return model_from_checkpoint(load_checkpoint(model_path))
