"""open_clip hub weights on this machine: found in the local cache, or fetched on request.

A run never downloads: a hub tag (``clip.pretrained: openai``) is loaded from the cache that
`python -m ccafl fetch-weights` (or open_clip itself, earlier) filled, and an uncached tag is a
one-line error before any job starts. An offline machine therefore answers at once instead of
retrying the hub for a minute. Importing this module imports neither torch nor open_clip.
"""

from __future__ import annotations

import os
from pathlib import Path

from ccafl.errors import WeightsError


def cached_hub_weights(model: str, tag: str) -> Path | None:
    """The local file open_clip would load for ``model``/``tag``, if it is already cached.

    Mirrors open_clip's own choice (Hugging Face hub first, with its safetensors
    alternatives; else the tag's URL, cached under ~/.cache/clip) but only looks in the
    caches: no request is made.
    """
    import open_clip
    from open_clip import pretrained as registry

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        path = Path(cfg["file"]).expanduser()
        return path if path.is_file() else None
    hub = cfg.get("hf_hub", "")
    if hub and registry.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(hub)
        filename = filename or registry.HF_WEIGHTS_NAME
        for name in [*registry._get_safe_alternatives(filename), filename]:
            found = try_to_load_from_cache(model_id, name)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return path if path.is_file() else None
    return None


def fetch_command(model: str, tag: str) -> str:
    return f"python -m ccafl fetch-weights --model {model} --pretrained {tag}"


def not_cached_message(model: str, tag: str) -> str:
    return (
        f"clip.pretrained: the open_clip weights {model}/{tag} are not downloaded on this "
        f"machine; run `{fetch_command(model, tag)}` once with internet access, or set "
        "clip.pretrained to a local weights file"
    )


def require_cached(model: str, tag: str) -> Path:
    """The cached file of a hub tag, or a WeightsError saying how to get it."""
    path = cached_hub_weights(model, tag)
    if path is None:
        raise WeightsError(not_cached_message(model, tag))
    return path


def fetch_hub_weights(model: str, tag: str) -> Path:
    """Download ``model``/``tag`` into open_clip's cache (a no-op when it is there already)."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise WeightsError(
            f"{model}/{tag} is not an open_clip pretrained tag "
            f"(tags for {model}: {', '.join(tags) or 'none'})"
        )
    cached = cached_hub_weights(model, tag)
    if cached is not None:
        return cached
    try:
        return Path(download_pretrained(cfg))
    except Exception as error:  # network errors come in many types, all with the same fix
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(
            f"could not download {model}/{tag} ({first}); on an offline machine download the "
            "weights elsewhere and set clip.pretrained to the file"
        ) from error


# --------------------------------------------------------------------------- image-only models

# ``clip.model`` names of backbones without a text tower (`ccafl.models.imagenet`).
IMAGE_ONLY_MODELS = ("resnet50-imagenet",)
IMAGENET_TAG = "imagenet"  # ``clip.pretrained`` for torchvision's cached ImageNet file
# torchvision's file names for ResNet-50's ImageNet weights, preferred first: IMAGENET1K_V1
# (its current and its pre-0.13 name; CALR's code loads V1), then IMAGENET1K_V2.
TORCHVISION_FILES = ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth")


def is_image_only(model: str) -> bool:
    """Whether ``clip.model`` names a backbone without a text tower (no prompts, no texts)."""
    return model in IMAGE_ONLY_MODELS


def torch_hub_checkpoints() -> Path:
    """Where torchvision caches weights: ``torch.hub.get_dir()/checkpoints``, found as torch
    finds it (``TORCH_HOME``, else ``XDG_CACHE_HOME``/torch) without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"
    )
    return Path(home).expanduser() / "hub" / "checkpoints"


def cached_imagenet_weights() -> Path | None:
    """torchvision's ResNet-50 ImageNet file in torch's hub cache, if one is there."""
    folder = torch_hub_checkpoints()
    return next((folder / n for n in TORCHVISION_FILES if (folder / n).is_file()), None)


def imagenet_not_cached_message() -> str:
    return (
        f"clip.pretrained: imagenet: no torchvision ResNet-50 ImageNet file in "
        f"{torch_hub_checkpoints()} (looked for {', '.join(TORCHVISION_FILES)}); run "
        "`python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')\"`"
        " once with internet access, or set clip.pretrained to a local ResNet-50 state dict file"
    )
