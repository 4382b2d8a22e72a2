"""open_clip models adapted to person re-identification (DESIGN section 5, "Backbone").

open_clip builds square-input CLIP models (224x224); ReID crops are 256x128 (H x W). The image
tower's positional embedding is tied to its token grid, so it is re-gridded bicubically to the
grid of the ReID input; the ResNet tower can optionally drop its last stride (a finer 16x8 grid
at 256x128, the usual ReID trick). Everything here uses open_clip as a library: the towers are
open_clip's own modules (`ModifiedResNet`, `VisionTransformer`) and only their parameters and
strides are changed.

Weight sources (`create_clip(pretrained=...)`):

* ``None``: random initialisation (tests, the non-CLIP ablation).
* an open_clip tag such as ``"openai"``: loaded from the local cache only; a run never
  downloads (``python -m ccafl fetch-weights`` fills the cache once, on request).
* a local checkpoint path: an OpenAI TorchScript archive, an OpenAI/open_clip state dict (also
  open_clip's ``{"state_dict": ...}`` training checkpoints) or one of our ``{"model": ...}``
  dicts.
* ``"captions"`` is *not* resolved here: the pipeline's ``clip_pretrain`` rule writes
  ``results/<ds>/clip/pretrained.pt`` and the caller passes that path.

Every source is built with the activation its weights were trained with (QuickGELU for all of
OpenAI's CLIPs, GELU for most LAION ones): from the tag's open_clip config, or for a file by
`resolve_quick_gelu`; ``clip.quick_gelu: true/false`` overrides.

Tested with open_clip 3.3: `ReIDEncoder` uses ``ModifiedResNet.stem`` and
``VisionTransformer._embeds``/``_pool`` so that it runs exactly open_clip's own forward up to
the pooled (pre-projection) feature.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import Tensor, nn

from ccafl.config import ConfigError
from ccafl.errors import MissingWeightsError, WeightsError
from ccafl.models.imagenet import ImageNetResNet

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_DIR_ENV",
    "RETRIEVAL_FEATURES",
    "ClipCheckpoint",
    "PromptTextEncoder",
    "ReIDEncoder",
    "adapt_to_image_size",
    "config_dirs",
    "create_clip",
    "feature_grid",
    "last_stride_one",
    "load_clip_state_dict",
    "read_clip_checkpoint",
    "register_model_configs",
    "resolve_quick_gelu",
    "uses_quick_gelu",
]

CONFIG_DIR_ENV = "CCAFL_CLIP_CONFIG_DIR"
_REGISTERED: set[Path] = set()


# --------------------------------------------------------------------------- model configs


def config_dirs() -> list[Path]:
    """Directories holding the project's open_clip model configs.

    ``config/clip/`` of the repository, then every directory in ``$CCAFL_CLIP_CONFIG_DIR``
    (``os.pathsep``-separated), so a user can add architectures without touching the package.
    """
    dirs = [Path(__file__).resolve().parents[2] / "config" / "clip"]
    extra = os.environ.get(CONFIG_DIR_ENV, "")
    dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return dirs


def register_model_configs() -> list[str]:
    """Make the project's configs (e.g. ``ccafl-tiny-rn``) known to open_clip by name.

    Idempotent; returns the model names open_clip knows afterwards. A directory named in
    ``$CCAFL_CLIP_CONFIG_DIR`` that does not exist is an error (a typo would otherwise surface
    later as "unknown model").
    """
    env_dirs = config_dirs()[1:]
    for path in config_dirs():
        path = path.resolve()
        if path in _REGISTERED:
            continue
        if not path.is_dir():
            if path in {p.resolve() for p in env_dirs}:
                raise FileNotFoundError(f"{CONFIG_DIR_ENV} names a missing directory: {path}")
            continue
        open_clip.add_model_config(path)
        _REGISTERED.add(path)
    return open_clip.list_models()


# --------------------------------------------------------------------------- geometry


def _visual(model: nn.Module) -> nn.Module:
    """The image tower of a CLIP model, or the tower itself."""
    return getattr(model, "visual", model)


def _out_len(n: int, module: nn.Module) -> int:
    """Output length along one axis of a conv/avg-pool layer (floor mode, as PyTorch)."""
    k, s, p = (module.kernel_size, module.stride, module.padding)
    k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
    return (n + 2 * p - k) // s + 1


def _block_stride(block: nn.Module) -> int:
    return int(getattr(block, "stride", 1))


def feature_grid(visual: nn.Module, image_size: tuple[int, int]) -> tuple[int, int]:
    """Token grid (rows, cols) the tower produces for an ``image_size`` = (H, W) input.

    ModifiedResNet: the layer4 feature map, input/32 (input/16 with last stride 1), computed
    from the actual strides so odd sizes are exact. ViT: input // patch.
    """
    visual = _visual(visual)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if isinstance(visual, ModifiedResNet):
        grid = []
        for n in (h, w):
            n = _out_len(n, visual.conv1)
            n = _out_len(n, visual.avgpool)
            for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                for block in layer:
                    n //= _block_stride(block)
            grid.append(n)
        rows, cols = grid
    elif isinstance(visual, VisionTransformer):
        ph, pw = open_clip.utils.to_2tuple(visual.patch_size)
        rows, cols = h // ph, w // pw
    else:
        raise TypeError(f"unsupported CLIP image tower: {type(visual).__name__}")
    if rows < 1 or cols < 1:
        raise ValueError(f"image_size {h}x{w} is too small for {type(visual).__name__}")
    return rows, cols


def _pos_embed_owner(visual: nn.Module) -> nn.Module:
    """Module holding the (1 + rows*cols, C) grid positional embedding."""
    if isinstance(visual, ModifiedResNet):
        return visual.attnpool
    if isinstance(visual, VisionTransformer):
        if visual.positional_embedding is None:
            raise TypeError("this ViT has no positional embedding to adapt")
        return visual
    raise TypeError(f"unsupported CLIP image tower: {type(visual).__name__}")


def _current_grid(visual: nn.Module) -> tuple[int, int]:
    """Grid the positional embedding currently encodes.

    open_clip's ViT tracks it in ``grid_size``; for ModifiedResNet it is square until we
    adapt it, after which we record it on the attention pool as ``grid_size``.
    """
    owner = _pos_embed_owner(visual)
    n = owner.positional_embedding.shape[0] - 1
    grid = getattr(owner, "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n:
        return int(grid[0]), int(grid[1])
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"cannot infer the grid of a {n}-token positional embedding")
    return side, side


def _regrid(pos: Tensor, old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """Bicubic resize of the grid part of a (1 + H*W, C) embedding; the first row is kept."""
    cls_row, grid = pos[:1], pos[1:]
    channels = grid.shape[-1]
    grid = grid.float().reshape(1, old[0], old[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], channels).to(pos.dtype)
    return torch.cat([cls_row, grid], dim=0)


@torch.no_grad()
def adapt_to_image_size(model: nn.Module, image_size: tuple[int, int]) -> nn.Module:
    """Re-grid the image tower's positional embedding for (H, W) inputs; returns ``model``.

    Why: open_clip's towers are built for square inputs and add a positional embedding of a
    fixed token count, so a 256x128 crop would not even run. The embedding of the grid cells
    is interpolated bicubically (the class/mean-token row is kept) to the new grid
    (`feature_grid`); when the grid is unchanged nothing is touched (bit-identical model).
    Call it before building optimisers: the parameter object is replaced when it changes.
    """
    visual = _visual(model)
    owner = _pos_embed_owner(visual)
    old, new = _current_grid(visual), feature_grid(visual, image_size)
    if new != old:
        pos = owner.positional_embedding
        owner.positional_embedding = nn.Parameter(
            _regrid(pos.detach(), old, new), requires_grad=pos.requires_grad
        )
    owner.grid_size = new
    visual.image_size = (int(image_size[0]), int(image_size[1]))
    preprocess = getattr(visual, "preprocess_cfg", None)
    if isinstance(preprocess, dict):
        preprocess["size"] = visual.image_size
    return model


def last_stride_one(model: nn.Module, image_size: tuple[int, int] | None = None) -> nn.Module:
    """Set the stride of ModifiedResNet's last stage to 1 (its grid doubles); returns ``model``.

    Why: a finer final feature map keeps more spatial detail of a narrow person crop (a
    standard ReID choice). open_clip's Bottleneck downsamples by an avg-pool before conv3 and
    in the shortcut, so both pools of layer4's first block become identities; no weights
    change. The positional embedding is then re-gridded for ``image_size`` (default: the
    tower's current ``image_size``), after the stride change so it matches the doubled grid.
    """
    visual = _visual(model)
    if not isinstance(visual, ModifiedResNet):
        raise TypeError(
            f"last stride 1 applies to ModifiedResNet towers, not {type(visual).__name__}"
        )
    block = visual.layer4[0]
    if _block_stride(block) != 1:
        block.avgpool = nn.Identity()
        if block.downsample is not None:
            for name, child in block.downsample.named_children():
                if isinstance(child, nn.AvgPool2d):
                    setattr(block.downsample, name, nn.Identity())
        block.stride = 1
    size = image_size if image_size is not None else open_clip.utils.to_2tuple(visual.image_size)
    adapt_to_image_size(visual, size)
    return model


# --------------------------------------------------------------------------- weights

# Extras of OpenAI's TorchScript archives (and buffers a trace promotes) that no open_clip model
# holds as a persistent tensor.
_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


@dataclass
class ClipCheckpoint:
    """A local CLIP weights file as read: the state dict and what the file says about itself."""

    state: dict[str, Tensor]
    kind: str  # "torchscript" (OpenAI archive), "ccafl" (our {"model": ...}), "state_dict"
    recorded_quick_gelu: bool | None = None  # written by ccafl when it resolved the activation
    recorded_config: Mapping | None = None  # the pipeline config stored with our checkpoints


def read_clip_checkpoint(path: str | os.PathLike) -> ClipCheckpoint:
    """Read CLIP weights from a local file, remembering the file's format.

    Accepts an open_clip/OpenAI state dict (``.pt``/``.bin``/``.safetensors``, also
    ``{"state_dict": ...}`` as open_clip's training writes it), a TorchScript OpenAI archive,
    or our own checkpoint ``{"model": state_dict, ...}`` (the ``clip_pretrain`` and
    ``clip_import`` rules write these).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path), device="cpu")
    elif _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's TorchScript deprecation notice
            obj = torch.jit.load(str(path), map_location="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # our own checkpoints may hold non-tensor state; the file is local
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as error:  # a damaged or foreign file: many exception types
                raise WeightsError(
                    f"clip.pretrained: cannot read {path} ({str(error).splitlines()[0]}); if "
                    "the pipeline wrote it, delete it and rerun snakemake"
                ) from error
    kind, recorded, config = "state_dict", None, None
    if isinstance(obj, torch.jit.ScriptModule):
        obj, kind = obj.state_dict(), "torchscript"
    elif isinstance(obj, Mapping):
        if isinstance(obj.get("model"), Mapping):
            kind, recorded = "ccafl", obj.get("quick_gelu")
            config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
            obj = obj["model"]
        elif isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no CLIP state dict")
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}
    for key in _ARCHIVE_EXTRAS:
        state.pop(key, None)
    return ClipCheckpoint(state, kind, recorded if isinstance(recorded, bool) else None, config)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (OpenAI's CLIP downloads) are zip files with code and constants."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_clip_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The CLIP state dict of a local file (see `read_clip_checkpoint` for the formats)."""
    return read_clip_checkpoint(path).state


def model_quick_gelu(model: str) -> bool:
    """The activation open_clip's config of ``model`` builds: True for QuickGELU."""
    register_model_configs()
    config = open_clip.get_model_config(model) or {}
    return bool(config.get("quick_gelu", False))


def published_quick_gelu(model: str) -> set[bool]:
    """The activations of the weights open_clip publishes for ``model`` (empty if none)."""
    return {
        bool(open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False))
        for tag in open_clip.list_pretrained_tags_by_model(model)
    }


def resolve_quick_gelu(model: str, checkpoint: ClipCheckpoint, path: Path) -> tuple[bool, str]:
    """Which activation the weights in ``path`` were trained with: (QuickGELU?, why we think so).

    Why this matters: OpenAI's CLIPs were trained with QuickGELU, open_clip's configs build
    nn.GELU unless told otherwise, and the key layout of a state dict is the same either way;
    the wrong one silently shifts every text feature (and every ViT image feature). The rules,
    in order (``clip.quick_gelu: true/false`` in the config skips them):

    1. a flag recorded by ccafl in the file (``clip_import`` writes it);
    2. our own ``{"model": ..., "config": ...}`` checkpoints: what that config built;
    3. a TorchScript archive: QuickGELU (only OpenAI ships CLIP that way, all with QuickGELU);
    4. a file name containing ``quickgelu`` (open_clip's naming of its QuickGELU releases);
    5. the architecture's published open_clip weights, when they all agree (every RN50, RN101
       and RN50xN release uses QuickGELU); with none published (a config of this project), the
       architecture's own config;
    6. otherwise (ViT-B-16: OpenAI's QuickGELU, LAION's GELU) the file cannot tell: an error
       asks for ``clip.quick_gelu``.
    """
    if checkpoint.recorded_quick_gelu is not None:
        return checkpoint.recorded_quick_gelu, "recorded in the checkpoint"
    if checkpoint.kind == "ccafl":
        clip_section = (checkpoint.recorded_config or {}).get("clip", {})
        chosen = (
            clip_section.get("quick_gelu", "auto") if isinstance(clip_section, Mapping) else None
        )
        if isinstance(chosen, bool):
            return chosen, "the clip.quick_gelu its checkpoint config set"
        return model_quick_gelu(model), f"the {model} config it was trained with"
    if checkpoint.kind == "torchscript":
        return True, "an OpenAI TorchScript archive (OpenAI trained with QuickGELU)"
    if "quickgelu" in path.name.lower():
        return True, "'quickgelu' in the file name (open_clip's naming)"
    published = published_quick_gelu(model)
    if len(published) == 1:
        (flag,) = published
        return flag, f"every published {model} weight uses {'QuickGELU' if flag else 'GELU'}"
    if not published:
        return model_quick_gelu(model), f"the {model} config (no published weights to compare)"
    raise ValueError(
        f"cannot tell whether {path} was trained with QuickGELU: published {model} weights use "
        "both (OpenAI's QuickGELU, others GELU); set clip.quick_gelu to true (OpenAI weights) "
        "or false in the config"
    )


def uses_quick_gelu(model: nn.Module) -> bool | None:
    """True/False if ``model`` holds QuickGELU/GELU activations, None if neither (ResNet towers).

    Checkpoints record this so that a bare rebuild gets the activation the weights were trained
    with even when the original weight file is gone.
    """
    kinds = {type(m) for m in model.modules() if isinstance(m, QuickGELU | nn.GELU)}
    if not kinds:
        return None
    return QuickGELU in kinds


def _pos_key(model: nn.Module) -> str:
    visual = model.visual
    return (
        "visual.attnpool.positional_embedding"
        if isinstance(visual, ModifiedResNet)
        else "visual.positional_embedding"
    )


def _load_strict(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise WeightsError(
            f"clip.pretrained: {path} does not fit the CLIP architecture of clip.model ({first}); "
            "check that clip.model names the architecture these weights were trained with"
        ) from err


def _check_quick_gelu(quick_gelu: object) -> bool | None:
    """Config value (``auto``/None, true, false) -> None (decide from the source) or a bool."""
    if quick_gelu is None or quick_gelu == "auto":
        return None
    if isinstance(quick_gelu, bool):
        return quick_gelu
    raise ValueError(f"clip.quick_gelu must be auto, true or false, got {quick_gelu!r}")


def create_clip(
    model: str,
    pretrained: str | None = None,
    image_size: tuple[int, int] | None = None,
    *,
    last_stride: int = 2,
    quick_gelu: bool | str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build an open_clip CLIP model and adapt its image tower to ReID inputs.

    Args:
        model: open_clip architecture name (``RN50``, ``ViT-B-16``, ``ccafl-tiny-rn``, ...).
        pretrained: ``None`` (random init), an open_clip tag (``openai``; from the local
            cache, see `ccafl.models.weights`), or a local checkpoint path (see
            `read_clip_checkpoint`). ``"captions"`` must be resolved by the caller to the
            checkpoint written by the ``clip_pretrain`` rule.
        image_size: (H, W) input of the ReID pipeline, e.g. (256, 128); ``None`` keeps the
            config's square size.
        last_stride: 2 (CLIP) or 1 (ModifiedResNet only, see `last_stride_one`).
        quick_gelu: ``None``/``"auto"``: the activation the weights were trained with (the
            tag's, or `resolve_quick_gelu` for a file; the architecture's own without
            weights); ``True``/``False`` forces QuickGELU/GELU. The choice is logged.
    """
    names = register_model_configs()
    if model not in names:
        raise ConfigError(
            f"clip.model: unknown CLIP model {model!r}; available: {', '.join(names)}"
        )
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    if pretrained == "captions":
        raise ValueError(
            "pretrained='captions' names the pipeline's own caption-pretrained CLIP: pass the "
            "checkpoint written by the clip_pretrain rule (results/<ds>/clip/pretrained.pt)"
        )
    forced = _check_quick_gelu(quick_gelu)

    tags = open_clip.list_pretrained_tags_by_model(model)
    state: dict[str, Tensor] | None = None
    path: Path | None = None
    if not pretrained:
        # Without weights the activation only matters if forced (or for a bare rebuild that
        # passes the flag its checkpoint recorded); otherwise build exactly as open_clip does.
        extra = {} if forced is None else _activation_kwargs(forced)
        clip = open_clip.create_model(model, pretrained=None, device=device, **extra)
    elif open_clip.is_pretrained_cfg(model, pretrained):
        # Loaded from the local cache only (`ccafl.models.weights`): a run never downloads.
        from ccafl.models.weights import require_cached

        cached = require_cached(model, pretrained)
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
        flag = bool(tag_cfg.get("quick_gelu", False)) if forced is None else forced
        why = f"open_clip tag {pretrained}" if forced is None else "clip.quick_gelu"
        _log_activation(model, pretrained, flag, why)
        try:
            clip = open_clip.create_model(
                model, pretrained=str(cached), device=device, **_activation_kwargs(flag)
            )
        except Exception as err:
            raise WeightsError(
                f"clip.pretrained: the cached open_clip weights {model}/{pretrained} ({cached}) "
                f"cannot be loaded ({str(err).splitlines()[0] if str(err) else err!r}); delete "
                "that file and fetch it again (python -m ccafl fetch-weights)"
            ) from err
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            known = f"; open_clip tags for {model}: {', '.join(tags)}" if tags else ""
            raise MissingWeightsError(
                f"clip.pretrained: CLIP checkpoint not found: {path} (pretrained={pretrained!r} "
                f"is neither an existing file nor an open_clip tag{known})"
            )
        checkpoint = read_clip_checkpoint(path)
        state = checkpoint.state
        if forced is None:
            flag, why = resolve_quick_gelu(model, checkpoint, path)
        else:
            flag, why = forced, "clip.quick_gelu"
        _log_activation(model, str(path), flag, why)
        clip = open_clip.create_model(
            model, pretrained=None, device=device, **_activation_kwargs(flag)
        )

    # A checkpoint is either native (square grid) or already adapted by us: load it at the
    # geometry it was saved with, so its positional embedding is interpolated at most once.
    native = state is not None and _fits(clip, state)
    if native:
        _load_strict(clip, state, path)
    if last_stride == 1:
        last_stride_one(clip, image_size)
    elif image_size is not None:
        adapt_to_image_size(clip, image_size)
    if state is not None and not native:
        _load_strict(clip, state, path)
    return clip.to(device)


def _activation_kwargs(quick_gelu: bool) -> dict[str, bool]:
    """open_clip's switch for the activation: ``force_quick_gelu`` sets it (as open_clip does
    for a QuickGELU tag), the ``quick_gelu`` model kwarg can also clear it."""
    return {"force_quick_gelu": True} if quick_gelu else {"quick_gelu": False}


def _log_activation(model: str, source: str, quick_gelu: bool, why: str) -> None:
    name = "QuickGELU" if quick_gelu else "GELU"
    log.info("CLIP %s from %s: %s activation (%s)", model, source, name, why)


def _fits(model: nn.Module, state: Mapping[str, Tensor]) -> bool:
    key = _pos_key(model)
    own = model.state_dict()[key]
    return key not in state or state[key].shape == own.shape


# --------------------------------------------------------------------------- image side


RETRIEVAL_FEATURES = ("pooled", "projection", "concat")


class ReIDEncoder(nn.Module):
    """CLIP image tower returning ``(f, p)`` for ReID training (DESIGN section 5 notation).

    * ``p``: the CLIP projection of the image (ModifiedResNet: attention pool, 1024-d for RN50;
      ViT: projected class token, 512-d), i.e. exactly ``clip.encode_image``; it lives in the
      joint space of the text features t_g and is used for image-text alignment (Eq. 9, 15).
    * ``f``: the ReID feature used by the memories, the association, the global-ID classifier,
      ICAL and retrieval. Which feature it is, is the ``feature`` argument (config
      ``train.feature``), each behind its own BN-neck (bias frozen, as in BNNeck baselines),
      which suits the cosine softmaxes of the method:

      - ``pooled``: the pooled *pre-projection* map (ModifiedResNet: global average pool of
        layer4, 2048-d for RN50; ViT: the class token after ``ln_post``, 768-d);
      - ``projection``: ``p`` itself (1024-d for RN50);
      - ``concat``: both, concatenated (3072-d for RN50): CLIP-ReID's retrieval feature.

      The paper's "features after the image encoder" does not settle the choice; README
      "Results" gives the measurement the defaults follow.

    The image-only ImageNet ResNet-50 (`ccafl.models.imagenet`, CALR's backbone) has no
    projection and no text space: only ``pooled`` (2048-d), and ``p`` is that pooled feature.
    """

    def __init__(self, visual: nn.Module, feature: str = "pooled"):
        super().__init__()
        visual = _visual(visual)
        if feature not in RETRIEVAL_FEATURES:
            raise ValueError(
                f"unknown retrieval feature {feature!r}; expected one of {RETRIEVAL_FEATURES}"
            )
        if isinstance(visual, ImageNetResNet):
            if feature != "pooled":
                raise ValueError(
                    f"train.feature: {feature!r} needs a CLIP projection; the image-only "
                    "resnet50-imagenet has none: use pooled"
                )
            pooled_dim = proj_dim = visual.out_dim  # p is f's input: there is no text space
        elif isinstance(visual, ModifiedResNet):
            pooled_dim = visual.attnpool.k_proj.in_features
            proj_dim = visual.attnpool.c_proj.out_features
        elif isinstance(visual, VisionTransformer):
            if visual.attn_pool is not None or visual.proj is None:
                raise TypeError(
                    "ViT towers with attentional pooling or no projection are unsupported"
                )
            pooled_dim, proj_dim = visual.proj.shape
        else:
            raise TypeError(f"unsupported CLIP image tower: {type(visual).__name__}")
        self.visual = visual
        self.feature = feature
        self.pooled_dim = int(pooled_dim)
        self.proj_dim = int(proj_dim)
        # One BN-neck per part of f; parameter names are stable across feature choices so a
        # checkpoint names what it holds.
        if feature in ("pooled", "concat"):
            self.bottleneck = _bn_neck(self.pooled_dim)
        if feature in ("projection", "concat"):
            self.bottleneck_proj = _bn_neck(self.proj_dim)
        self.feat_dim = {
            "pooled": self.pooled_dim,
            "projection": self.proj_dim,
            "concat": self.pooled_dim + self.proj_dim,
        }[feature]

    def pooled(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled pre-projection feature before the BN-neck, CLIP projection p)."""
        v = self.visual
        if isinstance(v, ImageNetResNet):  # no projection: p is the pooled feature itself
            pooled = v.feature_map(images).mean(dim=(2, 3))
            return pooled, pooled
        if isinstance(v, ModifiedResNet):
            x = v.stem(images.to(v.conv1.weight.dtype))
            x = v.layer4(v.layer3(v.layer2(v.layer1(x))))
            return x.mean(dim=(2, 3)), v.attnpool(x)
        tokens = v.transformer(v._embeds(images.to(v.conv1.weight.dtype)))
        pooled, _ = v._pool(tokens)
        return pooled, pooled @ v.proj

    def necks(self) -> list[nn.BatchNorm1d]:
        """The BN-necks of f, in the order their outputs are concatenated."""
        return [
            m
            for m in (getattr(self, "bottleneck", None), getattr(self, "bottleneck_proj", None))
            if m is not None
        ]

    def neck_inputs(self, pooled: Tensor, proj: Tensor) -> list[Tensor]:
        """What each BN-neck normalises, in the order of `necks`."""
        return {
            "pooled": [pooled],
            "projection": [proj],
            "concat": [pooled, proj],
        }[self.feature]

    def head(self, pooled: Tensor, proj: Tensor) -> Tensor:
        """f from the tower's two outputs: the BN-neck(s) of the chosen feature."""
        parts = [
            neck(x.float())
            for neck, x in zip(self.necks(), self.neck_inputs(pooled, proj), strict=True)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    @torch.no_grad()
    def calibrate_necks(self, pooled: Tensor, proj: Tensor) -> None:
        """Set the BN-necks' running statistics to those of the given (un-augmented) outputs.

        Why: a fresh BN-neck has running mean 0 and variance 1, so eval-mode features (used to
        fill the memories and the classifier before training, and for zero-shot evaluation)
        would not be normalised the way training normalises its batches.
        """
        for neck, x in zip(self.necks(), self.neck_inputs(pooled, proj), strict=True):
            x = x.float().to(neck.running_mean.device)
            neck.running_mean.copy_(x.mean(dim=0))
            neck.running_var.copy_(x.var(dim=0, unbiased=True))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pooled, proj = self.pooled(images)
        return self.head(pooled, proj), proj


def _bn_neck(dim: int) -> nn.BatchNorm1d:
    neck = nn.BatchNorm1d(dim)
    neck.bias.requires_grad_(False)
    return neck


# --------------------------------------------------------------------------- text side


class PromptTextEncoder(nn.Module):
    """Frozen CLIP text tower that encodes token *embeddings* instead of token ids.

    Why: prompt learning (paper Eq. 1-3) splices learnable vectors into the embedded sentence,
    which ``clip.encode_text`` (ids in) cannot take. The modules are shared with the CLIP
    model (not copied) and frozen; gradients still flow to the input embeddings.

    ``forward(prompt_embeddings (B, L, W), eot_indices (B,)) -> (B, embed_dim)``: L must be the
    model's context length; the feature is read at ``eot_indices`` (CLIP's argmax-pooling
    reads the EOT position, which the prompt learner knows).
    """

    def __init__(self, clip_model: nn.Module, freeze: bool = True):
        super().__init__()
        text = getattr(clip_model, "text", clip_model)  # CustomTextCLIP keeps a TextTransformer
        if getattr(text, "cls_emb", None) is not None or not hasattr(text, "ln_final"):
            raise TypeError("only CLIP-style text towers (no text class token) are supported")
        self.transformer = text.transformer
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        if freeze:
            self.requires_grad_(False)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def forward(self, prompt_embeddings: Tensor, eot_indices: Tensor) -> Tensor:
        if prompt_embeddings.shape[1] != self.context_length:
            raise ValueError(
                f"prompt length {prompt_embeddings.shape[1]} != context length "
                f"{self.context_length}"
            )
        dtype = self.transformer.get_cast_dtype()
        x = prompt_embeddings.to(dtype) + self.positional_embedding.to(dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_indices.to(x.device)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        if self.text_projection is not None:
            return x @ self.text_projection
        return x
