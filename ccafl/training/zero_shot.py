"""Zero-shot attribute retrieval: proof that the caption-pretrained CLIP aligns text and images.

For an attribute value (e.g. upper_color = red) the text "a photo of a person wearing a red
shirt." ranks the synthetic *test* images (never seen in pretraining); precision@10 is the
share of the 10 top-ranked images that show that value, against chance = its share of images.
Zero-shot classification picks, per image, the value whose text is most similar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F

from ccafl.models.factory import build_clip
from ccafl.settings import Settings
from ccafl.training.clip_pretrain import load_image_tensor

# attribute -> phrase template; the values come from the benchmark's caption columns.
ATTRIBUTE_PROMPTS = {
    "upper_color": "a photo of a person wearing a {} shirt.",
    "lower_color": "a photo of a person wearing {} trousers.",
    "hair": "a photo of a person with {} hair.",
    "shoes": "a photo of a person wearing {} shoes.",
    "bag": "a photo of a person with a {}.",
}
MIN_IMAGES = 10


@torch.no_grad()
def zero_shot_attribute_retrieval(
    settings: Settings, dataset_root: str | Path, clip_checkpoint: str | Path, top_k: int = 10
) -> dict:
    root = Path(dataset_root)
    captions = pd.read_parquet(root / "captions.parquet")
    test = captions[captions["split"].isin(["query", "gallery"])].reset_index(drop=True)
    clip = build_clip(settings.clip, settings.input.size, clip_checkpoint).eval()
    images = load_image_tensor(root, test["path"].tolist(), settings.input.size)
    image_feats = F.normalize(
        torch.cat([clip.encode_image(chunk) for chunk in images.split(256)]), dim=1
    )
    context_length = int(clip.positional_embedding.shape[0])
    result: dict[str, dict] = {}
    for attribute, template in ATTRIBUTE_PROMPTS.items():
        values = test[attribute]
        known = values.notna() & (values != "none")
        counts = values[known].value_counts()
        counts = counts[counts >= MIN_IMAGES]
        if len(counts) < 2:
            continue
        names = sorted(counts.index)
        tokens = open_clip.tokenize([template.format(v) for v in names], context_length)
        text_feats = F.normalize(clip.encode_text(tokens), dim=1)
        sims = image_feats @ text_feats.T  # (images, values)
        per_value = {}
        for j, value in enumerate(names):
            top = sims[:, j].topk(top_k).indices.numpy()
            per_value[value] = {
                "precision_at_10": float((values.to_numpy()[top] == value).mean()),
                "chance": float((values == value).mean()),
            }
        rows = np.flatnonzero(known.to_numpy() & values.isin(names).to_numpy())
        predicted = np.array(names)[sims[rows].argmax(dim=1).numpy()]
        result[attribute] = {
            "mean_precision_at_10": float(
                np.mean([v["precision_at_10"] for v in per_value.values()])
            ),
            "mean_chance": float(np.mean([v["chance"] for v in per_value.values()])),
            "classification_accuracy": float((predicted == values.to_numpy()[rows]).mean()),
            "classification_chance": float(counts.max() / counts.sum()),
            "values": per_value,
        }
    return {"n_test_images": len(test), "attributes": result}
