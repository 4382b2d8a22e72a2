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
from ccafl.losses import domain_adversarial_loss, prompt_loss, reverse_gradient
from ccafl.models.backbone import PromptTextEncoder, ReIDEncoder
from ccafl.models.domain_classifier import DomainClassifier
from ccafl.models.factory import build_clip
from ccafl.models.prompt_learner import DomainPromptLearner, PromptLearner
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
    # The DG mode's CLIP-FGDI parts (fgdi.domain_prompts): off, nothing below draws a number.
    fgdi = settings.fgdi
    if fgdi.on and cached is None:
        raise ValueError("fgdi.domain_prompts trains on the cached image features (use_cache)")
    adversary = None
    if fgdi.on:
        adversary = DomainAdversary.create(settings, train, int(cached.shape[1]), device)
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
            terms = {"loss_prompt": float(loss.detach())}
            if adversary is not None:
                domain_loss, accuracy = adversary.loss(text_feats, labels)
                loss = loss + fgdi.omega * domain_loss
                terms |= {"loss_domain": float(domain_loss.detach()), "domain_acc": accuracy}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if adversary is not None:
                adversary.optimizer.step()
            scheduler.step()
            loss_log.add(epoch, step, scheduler.get_last_lr()[0], **terms)
        bar.set_postfix(loss=f"{loss_log.epoch_means(epoch)['loss_prompt']:.3f}")
    timings["training_s"] = time.perf_counter() - start
    domain_text = None
    if adversary is not None:
        tick = time.perf_counter()
        domain_text = train_domain_prompts(
            settings, clip, learner, text_encoder, adversary.domain_of_gid, cached, gids,
            logit_scale, loss_log, generator, progress,
        )  # fmt: skip
        timings["domain_prompts_s"] = time.perf_counter() - tick

    text_features = learner.encode_all(text_encoder).float().cpu()
    image_feats = cached if cached is not None else features_of()
    top1 = own_text_top1(image_feats.float().cpu(), text_features, train["gid"].to_numpy())
    log.info("stage 1: image -> own text top-1 %.3f over %d images", top1, len(paths))
    metrics = {"own_text_top1": top1, "n_images": len(paths), "n_gids": n_gids, **timings}
    if adversary is not None:
        last = loss_log.epoch_means(cfg.epochs)
        metrics |= {"domain_acc_last_epoch": last["domain_acc"], "n_domains": adversary.n_domains}
    return {
        "learner": learner.cpu(),
        "text_features": text_features,
        "domain_text": domain_text,
        "domain_of_gid": None if adversary is None else adversary.domain_of_gid.cpu(),
        "logit_scale": logit_scale,
        "log": loss_log,
        "metrics": metrics,
    }


class DomainAdversary:
    """CLIP-FGDI's domain classifier on the identity prompts' text features, through the
    gradient reversal layer (factor fgdi.grl_lambda): it learns to name a prompt's source
    dataset, the prompts learn to hide it (the domain-invariant prompts). Its own Adam
    (fgdi.classifier_lr, weight decay 1e-4 as CLIP-FGDI's code)."""

    def __init__(self, classifier, optimizer, domain_of_gid, grl_lambda):
        self.classifier = classifier
        self.optimizer = optimizer
        self.domain_of_gid = domain_of_gid
        self.grl_lambda = grl_lambda
        self.n_domains = int(domain_of_gid.max()) + 1

    @classmethod
    def create(cls, settings: Settings, train: pd.DataFrame, width: int, device) -> DomainAdversary:
        if "domain" not in train.columns:
            raise ValueError(
                "fgdi.domain_prompts needs the pooled sources' domain column: run it with "
                "dataset.format: pooled (the DG mode)"
            )
        per_gid = train.drop_duplicates("gid").sort_values("gid")
        domain_of_gid = torch.as_tensor(per_gid["domain"].to_numpy().copy(), device=device)
        classifier = DomainClassifier(width, int(domain_of_gid.max()) + 1).to(device)
        optimizer = torch.optim.Adam(
            classifier.parameters(), lr=settings.fgdi.classifier_lr, weight_decay=1e-4
        )
        return cls(classifier, optimizer, domain_of_gid, settings.fgdi.grl_lambda)

    def loss(self, text_feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.classifier(reverse_gradient(text_feats, self.grl_lambda))
        domains = self.domain_of_gid[labels]
        accuracy = float((logits.argmax(dim=1) == domains).float().mean())
        return domain_adversarial_loss(logits, domains), accuracy


def train_domain_prompts(
    settings: Settings,
    clip,
    learner: PromptLearner,
    text_encoder: PromptTextEncoder,
    domain_of_gid: torch.Tensor,
    image_feats: torch.Tensor,
    gids: torch.Tensor,
    logit_scale: float,
    loss_log: LossLog,
    generator: torch.Generator,
    progress: bool,
) -> torch.Tensor:
    """CLIP-FGDI stage 2b: one domain token per source learned with the identity losses, the
    identity tokens frozen (fgdi.domain_epochs epochs after the identity prompts, on the same
    cached image features). Returns each gid's domain-relevant text feature (N_G, D)."""
    cfg = settings.prompt
    domain_learner = DomainPromptLearner(clip, learner, int(domain_of_gid.max()) + 1)
    domain_learner = domain_learner.to(image_feats.device)
    optimizer = torch.optim.Adam(domain_learner.parameters(), lr=cfg.lr)
    steps_per_epoch = max(1, len(gids) // cfg.batch_size)
    epochs = settings.fgdi.domain_epochs
    scheduler = prompt_scheduler(optimizer, epochs * steps_per_epoch)
    bar = tqdm(range(1, epochs + 1), desc="stage 1 (domain prompts)", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(gids), generator=generator).to(image_feats.device)
        for step in range(steps_per_epoch):
            batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            labels = gids[batch]
            text_feats = text_encoder(*domain_learner(labels, domain_of_gid[labels]))
            loss = prompt_loss(image_feats[batch], text_feats, labels, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_log.add(
                cfg.epochs + epoch, step, scheduler.get_last_lr()[0],
                loss_domain_prompt=float(loss.detach()),
            )  # fmt: skip
    all_gids = torch.arange(len(domain_of_gid), device=image_feats.device)
    return domain_learner.encode(text_encoder, all_gids, domain_of_gid).float().cpu()


def domain_text_table(result: dict) -> pd.DataFrame:
    if result["domain_text"] is None:
        return pd.DataFrame({"gid": pd.Series(dtype="int64"), "domain": pd.Series(dtype="int64"),
                             "feature": pd.Series(dtype=object)})  # fmt: skip
    features = result["domain_text"].numpy().astype(np.float32)
    return pd.DataFrame(
        {
            "gid": np.arange(len(features), dtype=np.int64),
            "domain": result["domain_of_gid"].numpy().astype(np.int64),
            "feature": list(features),
        }
    )


def run_prompt(
    settings: Settings,
    dataset_root: str | Path,
    ics_dir: str | Path,
    clip_path: str | Path | None,
    out_dir: str | Path,
    *,
    use_cache: bool = True,
    domain_text_out: str | Path | None = None,
) -> dict:
    """Stage 1's artifacts; ``domain_text_out`` (the DG mode): each gid's domain-relevant text
    feature (gid, domain, feature), empty when fgdi.domain_prompts is off."""
    out_dir = Path(out_dir)
    train = pd.read_parquet(Path(ics_dir) / "train.parquet")
    result = train_prompts(settings, dataset_root, train, clip_path, use_cache=use_cache)
    if domain_text_out is not None:
        write_parquet(domain_text_table(result), domain_text_out)
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
