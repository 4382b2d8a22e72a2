"""Image transforms: the paper's ReID augmentation (resize, flip, pad+crop, random erasing).

The PIL pipeline (`train_transform`) serves DataLoader workers; `tensor_train_transform`
applies the same steps, in the same order and with the same parameters, to images already
decoded and resized (`ccafl.data.images.decode_images`).
"""

from __future__ import annotations

import torch
from torchvision import transforms as T

# open_clip's normalisation constants for OpenAI CLIP (the images CLIP was trained on).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _padding(height: int) -> int:
    """10 px at the paper's 256x128 input (CLIP-ReID, TransReID), scaled for smaller inputs."""
    return max(1, round(10 * height / 256))


def train_transform(height: int, width: int) -> T.Compose:
    return T.Compose(
        [
            T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(p=0.5),
            T.Pad(_padding(height)),
            T.RandomCrop((height, width)),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
            T.RandomErasing(p=0.5, value=0),
        ]
    )


def test_transform(height: int, width: int) -> T.Compose:
    return T.Compose(
        [
            T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, scaled to [0, 1] and CLIP-normalised (ToTensor + Normalize)."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def tensor_train_transform(height: int, width: int):
    """`train_transform` for uint8 (B, 3, H, W) batches already at the input size.

    Per image: flip, zero padding (black, as PIL pads) and random crop on [0, 1] pixels, then
    normalisation, then random erasing with 0 (the mean colour), as in `train_transform`.
    Draws from the global torch RNG, so checkpointed RNG states make epochs reproducible.
    """
    geometric = T.Compose(
        [T.RandomHorizontalFlip(p=0.5), T.Pad(_padding(height)), T.RandomCrop((height, width))]
    )
    erase = T.RandomErasing(p=0.5, value=0)

    def apply(images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() / 255.0
        out = torch.stack([geometric(image) for image in pixels])
        mean = torch.tensor(CLIP_MEAN, device=out.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=out.device).view(1, 3, 1, 1)
        out = (out - mean) / std
        return torch.stack([erase(image) for image in out])

    return apply
