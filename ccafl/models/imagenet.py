"""The ImageNet ResNet-50 that CALR trains (an image-only backbone beside the CLIP towers).

CALR (Li et al., arXiv 2403.16450; official code leeBooMla/CALR, on ClusterContrast) trains
torchvision's ResNet-50 with ImageNet weights, its last stride removed, global average pooling
and a BN-neck. ``clip.model: resnet50-imagenet`` selects it. It has no text tower, so a run
with it has no stage 1 (no prompts) and no loss that needs texts; `config_problems` says so
before any job starts.

Weights (``clip.pretrained``), never downloaded by a run:

* ``imagenet``: torchvision's own file in torch's hub cache (``<torch hub dir>/checkpoints/``,
  what ``torchvision.models.resnet50(weights="IMAGENET1K_V1")`` downloaded once; CALR's code
  loads those V1 weights through ``pretrained=True``);
* a local file: a torchvision ResNet-50 state dict (``fc.*`` may be present and is dropped),
  or one of our ``{"model": ...}`` copies (the clip_import rule's);
* ``null``: random initialisation.

A file is read by `ccafl.models.backbone.read_clip_checkpoint`, the reader of every local
weights file (``ccafl.models.factory.build_imagenet_resnet`` builds the network).

The pipeline's images arrive normalised with CLIP's mean and std (`ccafl.data.transforms`);
the network maps them to ImageNet's normalisation first, an exact per-channel affine map, so
no data path needs to know which backbone it feeds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ccafl.data.transforms import CLIP_MEAN, CLIP_STD
from ccafl.errors import MissingWeightsError, WeightsError
from ccafl.models.weights import IMAGENET_TAG, cached_imagenet_weights, imagenet_not_cached_message

# torchvision's normalisation of its ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_file(source: str) -> Path:
    """The file behind ``clip.pretrained``: the hub cache's for ``imagenet``, else ``source``."""
    if source == IMAGENET_TAG:
        path = cached_imagenet_weights()
        if path is None:
            raise WeightsError(imagenet_not_cached_message())
        return path
    path = Path(source).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"clip.pretrained: ResNet-50 weights file not found: {path} (use a torchvision "
            "ResNet-50 state dict, 'imagenet' for torchvision's cached file, or null)"
        )
    return path


class ImageNetResNet(nn.Module):
    """torchvision's ResNet-50 trunk (no classifier) on CLIP-normalised images.

    ``feature_map(images)`` is layer4's output; `ReIDEncoder` pools it. ``last_stride_one``
    removes layer4's stride (CALR's and most ReID baselines' 16x8 map at 256x128).
    ``image_size`` (height, width) is only recorded, as on the CLIP towers (for export and
    search): the network takes any size.
    """

    out_dim = 2048

    def __init__(self, last_stride_one: bool = True, image_size: tuple[int, int] = (256, 128)):
        super().__init__()
        self.image_size = tuple(int(v) for v in image_size)
        from torchvision.models import resnet50

        trunk = resnet50(weights=None)
        del trunk.fc
        if last_stride_one:
            trunk.layer4[0].conv2.stride = (1, 1)
            trunk.layer4[0].downsample[0].stride = (1, 1)
        self.trunk = trunk
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # (x_clip * clip_std + clip_mean - mean) / std, per channel.
        self.register_buffer("input_scale", (clip_std / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "input_shift", ((clip_mean - mean) / std).view(1, 3, 1, 1), persistent=False
        )

    def load_trunk(self, state: dict[str, Tensor], path: Path) -> None:
        """Load a ResNet-50 state dict read from ``path``, strictly, without torchvision's
        ImageNet classifier (``fc.*``); another network is a one-line error."""
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        own = self.trunk.state_dict()
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
        if missing or unexpected or wrong:
            raise WeightsError(
                f"clip.pretrained: {path} is not a torchvision ResNet-50 state dict "
                f"({len(missing)} missing keys, {len(unexpected)} unexpected, {len(wrong)} of "
                f"another shape, e.g. {(missing + unexpected + sorted(wrong))[:2]})"
            )
        self.trunk.load_state_dict(state)

    def feature_map(self, images: Tensor) -> Tensor:
        t = self.trunk
        x = images.to(t.conv1.weight.dtype) * self.input_scale + self.input_shift
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))
