"""Un-augmented features of images, in order: the evaluation's, the memories' and the
association's, and the search commands'. Under torchrun each rank computes a share and the
shards are gathered."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ccafl import distributed
from ccafl.data.images import ImageTable
from ccafl.data.transforms import test_transform


def pick_device() -> torch.device:
    """This process's device: its own GPU under torchrun, else cuda:0 or the CPU."""
    return distributed.local_device()


def make_loader(dataset: ImageTable, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


@torch.no_grad()
def extract_features(
    model: nn.Module,
    root: str | Path,
    paths: list[str],
    input_size: tuple[int, int],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | None = None,
    which: str = "f",
    desc: str = "features",
):
    """Un-augmented features of ``paths`` in order.

    ``which``: ``f`` (the ReID feature behind its BN-neck(s)), ``before_neck`` (the same parts
    of f as they enter the neck(s), concatenated), ``p`` (the CLIP projection) or ``raw`` (the
    pair (pooled, projection) before any BN-neck). Under torchrun each rank
    computes every world_size-th image and the shards are gathered, so every rank returns all
    features.
    """
    device = device or pick_device()
    mine = list(range(len(paths)))[distributed.rank() :: distributed.world_size()]
    dataset = ImageTable(root, [paths[i] for i in mine], test_transform(*input_size))
    loader = make_loader(dataset, batch_size, num_workers)
    batches = (images for images, _ in loader)
    return features_of_batches(model, batches, mine, device, which, desc)


@torch.no_grad()
def features_of_batches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    mine: list[int],
    device: torch.device,
    which: str = "f",
    desc: str = "features",
):
    """Features (see `extract_features`) of this rank's share ``mine`` of the images, given as
    normalised batches in order; the shards of all ranks are gathered in image order."""
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    was_training = model.training
    model.eval()
    outputs = []
    for images in tqdm(batches, desc=desc, leave=False, disable=not distributed.is_main()):
        pooled, proj = model.pooled(images.to(device, non_blocking=True))
        if which == "raw":
            outputs.append((pooled.float(), proj.float()))
        elif which == "f":
            outputs.append((model.head(pooled, proj).float(),))
        elif which == "before_neck":
            parts = model.neck_inputs(pooled, proj)
            outputs.append((torch.cat([x.float() for x in parts], dim=1),))
        else:
            outputs.append((proj.float(),))
    model.train(was_training)
    if outputs:
        parts = [torch.cat(column) for column in zip(*outputs, strict=True)]
    else:
        parts = [torch.empty(0, device=device)] * (2 if which == "raw" else 1)
    if distributed.world_size() > 1:
        order = distributed.all_gather_cat(torch.tensor(mine, device=device))
        gathered = []
        for part in parts:
            full = distributed.all_gather_cat(part)
            out = torch.empty_like(full)
            out[order] = full
            gathered.append(out)
        parts = gathered
    parts = [part.cpu() for part in parts]
    return tuple(parts) if which == "raw" else parts[0]
