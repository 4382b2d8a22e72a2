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
from ccafl.errors import WeightsError
from ccafl.logs import quiet_open_clip
from ccafl.models.backbone import (
    ReIDEncoder,
    create_clip,
    read_clip_checkpoint,
    uses_quick_gelu,
)
from ccafl.models.imagenet import ImageNetResNet, weights_file
from ccafl.models.weights import IMAGENET_TAG, cached_imagenet_weights, is_image_only
from ccafl.settings import ClipSection, Settings, TrainSection

log = logging.getLogger(__name__)


def resolve_pretrained(clip: ClipSection, clip_path: str | Path | None) -> str | None:
    """The weights to start from: the pipeline's own copy when given, else ``clip.pretrained``.

    ``clip_path`` is the checkpoint a pipeline rule wrote: ``clip_pretrain`` for
    ``clip.pretrained: captions``, ``clip_import`` for a tag or a local file (the one place
    that reads the user's weights), ``prior`` for a run with CLIP-FGDI's prior stage (read
    whatever ``clip.pretrained`` says, null included: the prior may have started from random).
    Without it a tag or file is read directly (running a stage by hand); ``captions`` has no
    direct source.
    """
    source = clip.pretrained
    if clip_path is not None:  # also over null: a prior stage's CLIP trained from random
        return str(clip_path)
    if source == "captions":
        raise ConfigError(
            "clip.pretrained is 'captions' but no caption-pretrained checkpoint was given: "
            "pass --clip results/<name>/clip/pretrained.pt (written by the clip_pretrain rule)"
        )
    return source


def build_clip(
    clip: ClipSection,
    input_size: tuple[int, int],
    clip_path: str | Path | None = None,
    *,
    weights: bool = True,
    quick_gelu: bool | None = None,
):
    """The CLIP model of the ``clip`` section adapted to the ReID ``input_size`` (height, width).

    ``weights=False`` builds the architecture only, for loading a checkpoint on top; pass the
    ``quick_gelu`` that checkpoint recorded (`checkpoint_quick_gelu`) so the rebuilt
    activation is the trained one without reading the original weights again. Logs the
    weights it really loaded (open_clip's own messages would say "initialized randomly").
    """
    activation = clip.get("quick_gelu", "auto") if quick_gelu is None else quick_gelu
    source = resolve_pretrained(clip, clip_path) if weights else None
    with quiet_open_clip():
        model = create_clip(
            clip.model,
            source,
            input_size,
            last_stride=1 if clip.last_stride_one else 2,
            quick_gelu=activation,
        )
    log.info("CLIP %s: %s", clip.model, describe_weights(clip, source, weights))
    return model


def build_imagenet_resnet(
    source: str | None, last_stride_one: bool = True, image_size: tuple[int, int] = (256, 128)
) -> ImageNetResNet:
    """The image-only ResNet-50 with the weights of ``source`` (`ccafl.models.imagenet`): read
    from its file by the reader of every local weights file, loaded strictly."""
    model = ImageNetResNet(last_stride_one, image_size)
    if source is not None:
        path = weights_file(source)
        try:
            state = read_clip_checkpoint(path).state
        except ValueError as error:  # the file holds no state dict
            raise WeightsError(f"clip.pretrained: {path} is not a ResNet-50 state dict") from error
        model.load_trunk(state, path)
    return model


def describe_weights(clip: ClipSection, source: str | None, weights: bool = True) -> str:
    """Where a model's weights came from, in words, for the logs."""
    if not weights:
        return "architecture only (its weights are loaded from a checkpoint next)"
    if source is None:
        return "random initialisation (clip.pretrained: null)"
    if clip.pretrained == "captions":
        return f"caption-pretrained weights from {source}"
    if is_image_only(clip.model) and source == IMAGENET_TAG:
        return f"torchvision ImageNet weights from {cached_imagenet_weights()}"
    if open_clip.is_pretrained_cfg(clip.model, source):
        from ccafl.models.weights import cached_hub_weights

        path = cached_hub_weights(clip.model, source)
        return f"open_clip weights {clip.model}/{source} from {path}"
    return f"weights from local file {source}"


def retrieval_feature(train: TrainSection) -> str:
    """``train.feature``: which output of the image tower is the ReID feature f."""
    return train.get("feature", "pooled")  # model files written before the key


def build_reid_model(
    settings: Settings,
    clip_path: str | Path | None = None,
    *,
    weights: bool = True,
    quick_gelu: bool | None = None,
) -> ReIDEncoder:
    """The ReID network of ``settings``: a CLIP image tower, or the image-only ResNet-50."""
    if is_image_only(settings.clip.model):
        source = resolve_pretrained(settings.clip, clip_path) if weights else None
        visual = build_imagenet_resnet(source, settings.clip.last_stride_one, settings.input.size)
        log.info("%s: %s", settings.clip.model, describe_weights(settings.clip, source, weights))
        return ReIDEncoder(visual, retrieval_feature(settings.train))
    return ReIDEncoder(
        build_clip(
            settings.clip, settings.input.size, clip_path, weights=weights, quick_gelu=quick_gelu
        ).visual,
        retrieval_feature(settings.train),
    )


def checkpoint_quick_gelu(payload: dict) -> bool | None:
    """The activation a checkpoint of ours recorded (None: not recorded, or no GELU at all)."""
    flag = payload.get("quick_gelu")
    return flag if isinstance(flag, bool) else None


def import_clip(clip: ClipSection, out: str | Path) -> dict[str, Any]:
    """Read the weights named by ``clip.pretrained`` (a tag or a local file) once; write our copy.

    Why: the source is read here and nowhere else. Stages 1 and 2 start from the copy, later
    jobs load only their own checkpoints, so a training node needs neither the hub nor the
    user's file. The copy is the model at its native geometry (re-gridding stays the stages'
    job, so the result equals reading the source directly) and records the activation the
    weights were built with (`resolve_quick_gelu`), so it never has to be guessed again.
    """
    import time

    from ccafl.io import save_torch

    source = clip.pretrained
    if source in (None, "captions"):
        raise ValueError(
            f"clip.pretrained is {source!r}: nothing to import (clip_import reads an open_clip "
            "tag or a local checkpoint file)"
        )
    start = time.perf_counter()
    if is_image_only(clip.model):
        model = build_imagenet_resnet(source).trunk
        quick_gelu = None
    else:
        model = create_clip(clip.model, source, quick_gelu=clip.get("quick_gelu", "auto"))
        quick_gelu = uses_quick_gelu(model)
    state = model.state_dict()
    save_torch(
        {
            "model": state,
            "quick_gelu": quick_gelu,
            "clip_model": clip.model,
            "source": source,
            "versions": versions(),
        },
        out,
    )
    return {
        "model": clip.model,
        "source": source,
        "quick_gelu": quick_gelu,
        "parameters": int(sum(t.numel() for t in state.values())),
        "seconds": round(time.perf_counter() - start, 2),
    }


def versions() -> dict[str, str]:
    import ccafl

    return {
        "ccafl": ccafl.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }


def final_model_payload(model: nn.Module, settings: Settings, **extra: Any) -> dict[str, Any]:
    """Everything needed to rebuild the model without the pipeline's files."""
    return {
        "model": model.state_dict(),
        "config": settings.raw,
        "clip_model_config": open_clip.get_model_config(settings.clip.model),
        "quick_gelu": uses_quick_gelu(model),
        "versions": versions(),
        **extra,
    }
