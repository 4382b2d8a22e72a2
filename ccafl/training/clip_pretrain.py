"""Pretrain the tiny CLIP on the synthetic benchmark's captions (`clip.pretrained: captions`).

Stands in for web-scale CLIP pretraining so the demo has a CLIP with real image-text alignment
in its domain. Standard symmetric InfoNCE with CLIP's learnable temperature (Radford et al.
2021). Only the *pretraining* split is used: its identities never appear in train or test.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ccafl.data.datasets import DatasetError
from ccafl.data.transforms import CLIP_MEAN, CLIP_STD
from ccafl.inference.features import pick_device
from ccafl.io import save_torch, write_json
from ccafl.models.factory import build_clip
from ccafl.seeding import seed_everything
from ccafl.settings import Settings
from ccafl.training.common import LossLog
from ccafl.training.schedule import pretrain_factor

log = logging.getLogger(__name__)


def load_image_tensor(root: Path, paths: list[str], size: tuple[int, int]) -> torch.Tensor:
    """All images as one normalised (N, 3, H, W) tensor: the pretraining split is small."""
    height, width = size
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    out = torch.empty(len(paths), 3, height, width)
    for i, rel in enumerate(tqdm(paths, desc="loading images", leave=False)):
        try:
            with Image.open(root / rel) as image:
                image = image.convert("RGB").resize((width, height), Image.BICUBIC)
        except Exception as error:
            raise DatasetError(f"cannot read image {root / rel}: {error}") from error
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out[i] = (pixels - mean) / std
    return out


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Batch-wise flip and pad+crop on tensors (cheap on CPU)."""
    n, _, height, width = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
    pad = max(1, round(height / 16))
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + height, dx : dx + width]


def infonce_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, logit_scale: torch.Tensor):
    """Symmetric InfoNCE: each image's caption is its positive, the batch's others negatives."""
    image_feats = F.normalize(image_feats, dim=1)
    text_feats = F.normalize(text_feats, dim=1)
    logits = logit_scale.exp() * image_feats @ text_feats.T
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def pretrain_clip(settings: Settings, dataset_root: str | Path, out_dir: str | Path) -> dict:
    cfg = settings.clip_pretrain
    if settings.clip.pretrained != "captions":
        raise ValueError("clip_pretrain runs only when clip.pretrained is 'captions'")
    seed_everything(cfg.seed)
    root = Path(dataset_root)
    captions_path = root / "captions.parquet"
    if not captions_path.is_file():
        raise DatasetError(
            f"{captions_path} not found: caption pretraining needs the synthetic benchmark"
        )
    captions = pd.read_parquet(captions_path)
    split = captions[captions["split"] == "pretrain"].reset_index(drop=True)
    if split.empty:
        raise DatasetError(f"{captions_path} has no rows with split == 'pretrain'")
    device = pick_device()
    clip = build_clip(settings.clip.replace(pretrained=None), settings.input.size).to(device)
    context_length = int(clip.positional_embedding.shape[0])
    tokens = open_clip.tokenize(split["caption"].tolist(), context_length=context_length)
    images = load_image_tensor(root, split["path"].tolist(), settings.input.size)

    batch_size = min(cfg.batch_size, len(split))
    steps_per_epoch = max(1, len(split) // batch_size)
    total = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(clip.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: pretrain_factor(step, warmup, total)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_log = LossLog()
    start = time.perf_counter()
    clip.train()
    for epoch in (bar := tqdm(range(1, cfg.epochs + 1), desc="clip pretraining")):
        order = torch.randperm(len(split), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            image_feats = clip.encode_image(augment(images[batch], generator).to(device))
            text_feats = clip.encode_text(tokens[batch].to(device))
            loss = infonce_loss(image_feats, text_feats, clip.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():  # CLIP clamps its temperature at 100
                clip.logit_scale.clamp_(0, math.log(100))
            loss_log.add(epoch, step, scheduler.get_last_lr()[0], loss_infonce=float(loss.detach()))
        bar.set_postfix(loss=f"{loss_log.epoch_means(epoch)['loss_infonce']:.3f}")
    seconds = time.perf_counter() - start

    out_dir = Path(out_dir)
    clip = clip.cpu().eval()
    save_torch({"model": clip.state_dict(), "config": settings.raw}, out_dir / "pretrained.pt")
    loss_log.write(out_dir / "log.parquet")
    metrics = {
        "images": len(split),
        "epochs": cfg.epochs,
        "seconds": round(seconds, 1),
        "final_loss": float(loss_log.epoch_means(cfg.epochs)["loss_infonce"]),
        "logit_scale": float(clip.logit_scale.detach().exp()),
    }
    write_json(metrics, out_dir / "metrics.json")
    log.info("clip pretraining: %s", metrics)
    return metrics
