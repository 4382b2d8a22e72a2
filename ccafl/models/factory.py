"""Config-driven model creation, and the one-call loader of a final model for inference."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from ccafl.config import ConfigError
from ccafl.logs import quiet_open_clip
from ccafl.models.backbone import ReIDEncoder, create_clip, register_model_configs

log = logging.getLogger(__name__)


def resolve_pretrained(config: dict, clip_path: str | Path | None) -> str | None:
    """``clip.pretrained: captions`` means the checkpoint the clip_pretrain rule wrote."""
    source = config["clip"]["pretrained"]
    if source == "captions":
        if clip_path is None:
            raise ConfigError(
                "clip.pretrained is 'captions' but no caption-pretrained checkpoint was given: "
                "pass --clip results/<name>/clip/pretrained.pt (written by the clip_pretrain rule)"
            )
        return str(clip_path)
    return source


def input_size(config: dict) -> tuple[int, int]:
    return config["input"]["height"], config["input"]["width"]


def build_clip(config: dict, clip_path: str | Path | None = None, *, weights: bool = True):
    """The CLIP model of ``config['clip']`` adapted to the ReID input size.

    ``weights=False`` builds the architecture only, for loading a checkpoint on top. Logs the
    weights it really loaded (open_clip's own messages would say "initialized randomly").
    """
    clip = config["clip"]
    source = resolve_pretrained(config, clip_path) if weights else None
    with quiet_open_clip():
        model = create_clip(
            clip["model"],
            source,
            input_size(config),
            last_stride=1 if clip["last_stride_one"] else 2,
        )
    log.info("CLIP %s: %s", clip["model"], describe_weights(config, source, weights))
    return model


def describe_weights(config: dict, source: str | None, weights: bool = True) -> str:
    """Where a model's weights came from, in words, for the logs."""
    if not weights:
        return "architecture only (its weights are loaded from a checkpoint next)"
    if source is None:
        return "random initialisation (clip.pretrained: null)"
    if config["clip"]["pretrained"] == "captions":
        return f"caption-pretrained weights from {source}"
    if open_clip.is_pretrained_cfg(config["clip"]["model"], source):
        from ccafl.models.weights import cached_hub_weights

        path = cached_hub_weights(config["clip"]["model"], source)
        return f"open_clip weights {config['clip']['model']}/{source} from {path}"
    return f"weights from local file {source}"


def retrieval_feature(config: dict) -> str:
    """``train.feature``: which output of the image tower is the ReID feature f."""
    return config["train"].get("feature", "pooled")  # model files written before the key


def build_reid_model(
    config: dict, clip_path: str | Path | None = None, *, weights: bool = True
) -> ReIDEncoder:
    return ReIDEncoder(
        build_clip(config, clip_path, weights=weights).visual, retrieval_feature(config)
    )


def versions() -> dict[str, str]:
    import ccafl

    return {
        "ccafl": ccafl.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }


def final_model_payload(model: nn.Module, config: dict, **extra: Any) -> dict[str, Any]:
    """Everything needed to rebuild the model without the pipeline's files."""
    return {
        "model": model.state_dict(),
        "config": config,
        "clip_model_config": open_clip.get_model_config(config["clip"]["model"]),
        "versions": versions(),
        **extra,
    }


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
    config = payload["config"]
    name = config["clip"]["model"]
    if name not in register_model_configs() and payload.get("clip_model_config"):
        _register_config(name, payload["clip_model_config"])  # the model file is portable
    model = build_reid_model(config, weights=False)
    model.load_state_dict(payload["model"])
    return model.to(device).eval()
