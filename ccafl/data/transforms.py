"""Image transforms: the paper's ReID augmentation (resize, flip, pad+crop, random erasing)."""

from __future__ import annotations

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
