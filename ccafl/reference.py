"""Reference rows beside a trained model: the pretrained CLIP without ReID training
(``zeroshot``) and a network of the same architecture without any training (``untrained``).

Each is evaluated per retrieval feature (pooled, projection, concat; an image-only backbone has
only pooled), two ways:

* ``raw``: the tower's outputs as they come (a fresh BN-neck in eval mode is the identity);
* ``calibrated``: the BN-necks' statistics set from the un-augmented training images (no
  labels), i.e. f exactly as training computes it at its first step.

The best of these is the bar a trained model must clear: training that does not beat its own
starting point has learnt nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ccafl.inference.features import extract_features
from ccafl.models.backbone import RETRIEVAL_FEATURES
from ccafl.models.factory import build_reid_model
from ccafl.models.weights import is_image_only
from ccafl.retrieval import evaluate_model
from ccafl.seeding import seed_everything
from ccafl.settings import Settings


def reference_metrics(
    settings: Settings,
    clip_path: str | Path | None,
    dataset_root: str | Path,
    ics_dir: str | Path,
    *,
    untrained: bool = False,
    train_table: str | Path | None = None,
) -> dict:
    """``{feature: {"raw": metrics, "calibrated": metrics}, "best": {...}}`` (see module doc).

    ``train_table`` (default ``ics_dir``'s train.parquet) holds the images that calibrate the
    BN-necks: in the DG mode the pooled sources', so a target's training split stays unread.
    """
    ics_dir = Path(ics_dir)
    train_table = Path(train_table) if train_table else ics_dir / "train.parquet"
    train_paths = pd.read_parquet(train_table)["path"].tolist()
    result: dict = {"source": "untrained" if untrained else str(settings.clip.pretrained)}
    best = None
    raw_outputs = None
    features = ("pooled",) if is_image_only(settings.clip.model) else RETRIEVAL_FEATURES
    for feature in features:
        feature_settings = settings.replace(train=settings.train.replace(feature=feature))
        if untrained:
            feature_settings = feature_settings.replace(clip=settings.clip.replace(pretrained=None))
            seed_everything(settings.train.seed)  # the same random network per feature
        model = build_reid_model(feature_settings, None if untrained else clip_path)
        rows = {
            "raw": evaluate_model(model, feature_settings, dataset_root, ics_dir, label=feature)
        }
        if raw_outputs is None:  # the tower is the same for every feature
            raw_outputs = extract_features(
                model,
                dataset_root,
                train_paths,
                settings.input.size,
                batch_size=settings.eval.batch_size,
                which="raw",
                desc="training images",
            )
        model.calibrate_necks(*raw_outputs)
        rows["calibrated"] = evaluate_model(
            model, feature_settings, dataset_root, ics_dir, label=f"{feature} (calibrated)"
        )
        result[feature] = rows
        for way, metrics in rows.items():
            if best is None or metrics["mAP"] > best["mAP"]:
                best = {"feature": feature, "way": way, **metrics}
    result["best"] = best
    return result
