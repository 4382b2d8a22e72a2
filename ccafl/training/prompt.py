"""Stage 1 (paper Eq. 1-3): learn M prompt tokens per global ICS id with both encoders frozen.

The image encoder is frozen, so its features are computed once and cached: every epoch after
the first costs only the text side. ``use_cache=False`` recomputes them per batch, which exists
to measure what the cache saves.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ccafl.inference.features import extract_features, pick_device
from ccafl.io import save_torch, write_json, write_parquet
from ccafl.losses import prompt_loss
from ccafl.models.backbone import PromptTextEncoder, ReIDEncoder
from ccafl.models.factory import build_clip
from ccafl.models.prompt_learner import PromptLearner
from ccafl.seeding import seed_everything
from ccafl.settings import Settings
from ccafl.training.common import LossLog
from ccafl.training.schedule import prompt_scheduler

log = logging.getLogger(__name__)


def own_text_top1(image_feats: torch.Tensor, text_feats: torch.Tensor, gids: np.ndarray) -> float:
    """Share of images whose nearest text feature (over all gids) is their own gid's."""
    image_feats = torch.nn.functional.normalize(image_feats, dim=1)
    text_feats = torch.nn.functional.normalize(text_feats, dim=1)
    nearest = (image_feats @ text_feats.T).argmax(dim=1).numpy()
    return float((nearest == gids).mean())


def train_prompts(
    settings: Settings,
    dataset_root: str | Path,
    train: pd.DataFrame,
    clip_path: str | Path | None,
    *,
    use_cache: bool = True,
    progress: bool = True,
) -> dict:
    """Returns the learner, text features (N_G, D), loss log and diagnostics."""
    cfg = settings.prompt
    seed_everything(cfg.seed)
    device = pick_device()
    clip = build_clip(settings.clip, settings.input.size, clip_path).to(device).eval()
    clip.requires_grad_(False)
    image_encoder = ReIDEncoder(clip.visual).to(device).eval()
    text_encoder = PromptTextEncoder(clip).to(device)
    n_gids = int(train["gid"].max()) + 1
    learner = PromptLearner(clip, n_gids, cfg.n_tokens).to(device)
    logit_scale = float(clip.logit_scale.exp())
    gids = torch.as_tensor(train["gid"].to_numpy().copy(), device=device)
    paths = train["path"].tolist()
    size = settings.input.size
    # Stage 1 reads no train.* key, so ablation variants of stages 2-3 share its outputs.
    num_workers = 0

    def features_of(indices: list[str] | None = None) -> torch.Tensor:
        return extract_features(
            image_encoder,
            dataset_root,
            paths if indices is None else indices,
            size,
            batch_size=cfg.batch_size,
            num_workers=num_workers,
            device=device,
            which="p",
            desc="stage-1 image features",
        ).to(device)

    timings = {}
    start = time.perf_counter()
    cached = features_of() if use_cache else None
    timings["image_features_s"] = time.perf_counter() - start

    optimizer = torch.optim.Adam(learner.parameters(), lr=cfg.lr)
    steps_per_epoch = max(1, len(paths) // cfg.batch_size)
    scheduler = prompt_scheduler(optimizer, cfg.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_log = LossLog()
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc="stage 1 (prompt)", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(paths), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if cached is not None:
                image_feats = cached[batch.to(device)]
            else:
                image_feats = features_of([paths[i] for i in batch.tolist()])
            labels = gids[batch.to(device)]
            text_feats = text_encoder(*learner(labels))
            loss = prompt_loss(image_feats, text_feats, labels, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_log.add(epoch, step, scheduler.get_last_lr()[0], loss_prompt=float(loss.detach()))
        bar.set_postfix(loss=f"{loss_log.epoch_means(epoch)['loss_prompt']:.3f}")
    timings["training_s"] = time.perf_counter() - start

    text_features = learner.encode_all(text_encoder).float().cpu()
    image_feats = cached if cached is not None else features_of()
    top1 = own_text_top1(image_feats.float().cpu(), text_features, train["gid"].to_numpy())
    log.info("stage 1: image -> own text top-1 %.3f over %d images", top1, len(paths))
    return {
        "learner": learner.cpu(),
        "text_features": text_features,
        "logit_scale": logit_scale,
        "log": loss_log,
        "metrics": {"own_text_top1": top1, "n_images": len(paths), "n_gids": n_gids, **timings},
    }


def run_prompt(
    settings: Settings,
    dataset_root: str | Path,
    ics_dir: str | Path,
    clip_path: str | Path | None,
    out_dir: str | Path,
    *,
    use_cache: bool = True,
) -> dict:
    out_dir = Path(out_dir)
    train = pd.read_parquet(Path(ics_dir) / "train.parquet")
    result = train_prompts(settings, dataset_root, train, clip_path, use_cache=use_cache)
    learner: PromptLearner = result["learner"]
    per_gid = train.drop_duplicates("gid").sort_values("gid")[["gid", "camera", "intra_id"]]
    features = result["text_features"].numpy().astype(np.float32)
    table = per_gid.reset_index(drop=True).assign(feature=list(features))
    write_parquet(table, out_dir / "text_features.parquet")
    result["log"].write(out_dir / "log.parquet")
    write_json(result["metrics"], out_dir / "metrics.json")
    save_torch(
        {
            "ctx": learner.state_dict(),
            "n_tokens": learner.n_tokens,
            "template": learner.template,
            "n_gids": learner.n_classes,
            "logit_scale": result["logit_scale"],
            "config": settings.raw,
        },
        out_dir / "prompt_tokens.pt",
    )
    log.info("stage 1 metrics: %s", json.dumps(result["metrics"]))
    return result["metrics"]
