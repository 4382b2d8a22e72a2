"""Identities: combinable attributes, many near-duplicates (hard negatives inside a camera)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from ccafl.data.synthetic.vocabulary import (
    ATTRIBUTE_CHOICES,
    BAG,
    BAG_COLORS,
    BELT,
    BUILD_WIDTH,
    COLLAR,
    DETAIL_COLORS,
    HAIR,
    HAIR_COLORS,
    HAT,
    HEIGHT_FACTOR,
    LOGO,
    LOWER,
    LOWER_COLORS,
    N_LABELS,
    SHOE_COLORS,
    SHOES,
    SKIN,
    SKIN_TONES,
    STRAP,
    UPPER,
    UPPER_COLORS,
    _pick,
    _rng,
)

# --------------------------------------------------------------------------------------------
# Identities


@dataclass
class Identity:
    """One person: categorical attributes (for captions) plus continuous look (for drawing).

    The categorical attributes are what a caption can say ("a red striped shirt"); everything
    else here is a personal detail no caption names: the exact shade of each named colour,
    the pattern's second colour, period and duty, sleeve and trouser length, belt, collar,
    cap, body proportions, bag size and side. Several identities share one look (all
    captioned attributes), so only these details tell them apart, as with real people in
    similar clothes.
    """

    pid: int
    attrs: dict[str, str]
    colors: np.ndarray  # (N_LABELS, 3) float32 RGB per label
    pattern_color: np.ndarray  # (3,) second colour of stripes / checks
    width: float  # body width factor
    height_factor: float
    head_scale: float
    stripe_period: float  # fraction of the person's height
    bag_side: int  # +1 / -1: which hand or hip carries the bag
    stripe_duty: float = 0.5  # share of a stripe period in the shirt colour
    long_sleeves: bool = False
    shorts: bool = False
    belt: bool = False
    collar: bool = False
    cap: bool = False
    waist: float = 0.535  # bottom of the torso, in person heights from the top of the head
    shoulder: float = 1.0  # shoulder width factor
    leg_width: float = 1.0
    bag_scale: float = 1.0


def _sample_attrs(rng: np.random.Generator) -> dict[str, str]:
    return {name: _pick(rng, *choices) for name, choices in ATTRIBUTE_CHOICES.items()}


def _mutate_attrs(
    rng: np.random.Generator, base: dict[str, str], n_changes: int | None = None
) -> dict[str, str]:
    """Change attributes of a look, each to a different value (1-3 of them by default)."""
    attrs = dict(base)
    names = list(ATTRIBUTE_CHOICES)
    n = int(rng.integers(1, 4)) if n_changes is None else n_changes
    for idx in rng.choice(len(names), size=n, replace=False):
        values, weights = ATTRIBUTE_CHOICES[names[idx]]
        keep = [i for i, v in enumerate(values) if v != attrs[names[idx]]]
        attrs[names[idx]] = _pick(
            rng, tuple(values[i] for i in keep), tuple(weights[i] for i in keep)
        )
    return attrs


def _jittered(rng: np.random.Generator, rgb: tuple[int, int, int], std: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, std, 3), 0, 255).astype(np.float32)


def _shade(rng: np.random.Generator, rgb: tuple[int, int, int], detail: float) -> np.ndarray:
    """A personal shade of a named colour: hue, saturation and value moved within the name."""
    h, sat, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h = (h + detail * rng.uniform(-0.03, 0.03)) % 1.0
    sat = min(1.0, max(0.0, sat * (1 + detail * rng.uniform(-0.35, 0.35))))
    v = min(1.0, max(0.0, v * (1 + detail * rng.uniform(-0.25, 0.25))))
    shaded = np.asarray(colorsys.hsv_to_rgb(h, sat, v), np.float32) * 255
    return np.clip(shaded + rng.normal(0, 4, 3), 0, 255).astype(np.float32)


def _detail_color(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A detail colour that stands out from ``avoid`` (the garment it sits on)."""
    names = list(DETAIL_COLORS)
    for _ in range(8):
        rgb = np.asarray(DETAIL_COLORS[names[int(rng.integers(len(names)))]], np.float32)
        if np.abs(rgb - avoid).sum() > 120:
            break
    return _jittered(rng, tuple(int(c) for c in rgb), 6)


def _make_identity(
    rng: np.random.Generator, pid: int, attrs: dict[str, str], detail: float = 1.0
) -> Identity:
    colors = np.zeros((N_LABELS, 3), np.float32)
    upper = _shade(rng, UPPER_COLORS[attrs["upper_color"]], detail)
    bag = _shade(rng, BAG_COLORS[attrs["bag_color"]], detail)
    colors[SKIN] = _jittered(rng, SKIN_TONES[attrs["skin"]], 6)
    colors[HAIR] = _shade(rng, HAIR_COLORS[attrs["hair"]], 0.5 * detail)
    colors[UPPER] = upper
    colors[LOWER] = _shade(rng, LOWER_COLORS[attrs["lower_color"]], detail)
    colors[SHOES] = _shade(rng, SHOE_COLORS[attrs["shoes"]], 0.5 * detail)
    colors[BAG] = bag
    colors[STRAP] = bag * 0.8
    dark_shirt = upper.mean() < 120
    colors[LOGO] = np.array((240, 236, 90) if dark_shirt else (25, 25, 60), np.float32)
    colors[BELT] = _detail_color(rng, colors[LOWER])
    colors[COLLAR] = _detail_color(rng, upper)
    colors[HAT] = _detail_color(rng, colors[HAIR])
    has = rng.random(5) < detail * np.array([0.45, 0.2, 0.4, 0.3, 0.2])
    return Identity(
        pid=pid,
        attrs=attrs,
        colors=colors,
        pattern_color=_detail_color(rng, upper)
        if detail > 0
        else _jittered(rng, (235, 235, 230) if dark_shirt else (30, 30, 45), 10),
        width=BUILD_WIDTH[attrs["body"]] * float(rng.uniform(0.95, 1.05)),
        height_factor=HEIGHT_FACTOR[attrs["height"]] * float(rng.uniform(0.98, 1.02)),
        head_scale=float(rng.uniform(0.92, 1.08)),
        stripe_period=float(rng.uniform(0.04, 0.06) + detail * rng.uniform(-0.01, 0.02)),
        bag_side=int(rng.choice((-1, 1))),
        stripe_duty=float(0.5 + detail * rng.uniform(-0.18, 0.15)),
        long_sleeves=bool(has[0]),
        shorts=bool(has[1]),
        belt=bool(has[2]),
        collar=bool(has[3]),
        cap=bool(has[4]),
        waist=float(0.535 + detail * rng.uniform(-0.035, 0.035)),
        shoulder=float(1 + detail * rng.uniform(-0.12, 0.12)),
        leg_width=float(1 + detail * rng.uniform(-0.15, 0.15)),
        bag_scale=float(1 + detail * rng.uniform(-0.2, 0.2)),
    )


def sample_identities(
    seed: int, split: str, pids: list[int], ids_per_look: int = 1, detail: float = 1.0
) -> list[Identity]:
    """Identities of one split; ``ids_per_look`` of them share a look (captioned attributes).

    Within a look, 7 in 10 identities keep every captioned attribute and the others change
    one; all differ in their personal details (`Identity`).
    """
    rng = _rng(seed, "identities", split)
    n_looks = max(1, math.ceil(len(pids) / ids_per_look))
    looks = [_sample_attrs(rng) for _ in range(n_looks)]
    group = rng.permutation(np.arange(len(pids)) % n_looks)
    identities = []
    for pid, g in zip(pids, group, strict=True):
        same = ids_per_look > 1 and rng.random() < 0.7
        attrs = dict(looks[g]) if same else _mutate_attrs(rng, looks[g], 1)
        identities.append(_make_identity(rng, pid, attrs, detail))
    return identities
