"""Embedded synthetic ReID benchmark: procedurally rendered pedestrians in the Market-1501 layout.

Why it exists: the demo pipeline must run end to end on 2 CPU cores with no download, and still
pose the problem CCAFL solves. So identities are built from combinable attributes (many are
near-duplicates: hard negatives inside a camera) and every camera has its own photometric and
geometric signature (colour cast, background, dominant viewpoint, framing, blur, noise, JPEG,
occluders), which makes naive features match camera before person. `shift_strength` scales all
camera differences, so 0 gives a control benchmark with identical cameras.

Layout under the dataset root (Market-1501 naming ``{pid:04d}_c{cam}s1_{frame:06d}_00.jpg``):
``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (with distractors pid 0000 and junk
pid -1), ``pretrain/`` (identities disjoint from train and test, for caption pretraining),
``captions.parquet`` and ``spec.json``.

``captions.parquet`` has one row per image of every split: ``path`` (posix, relative to the
root), ``split`` (train / query / gallery / pretrain), ``pid`` (0 distractor, -1 junk),
``camera`` (0-based), ``caption`` (one sentence naming only what is visible in that image) and
one column per attribute (ATTRIBUTE_COLUMNS) holding the value *as seen in that image*: null
when hidden by viewpoint, occlusion or framing (a backpack seen from the front is null, a
person without a bag is "none"; a logo seen from the back reads "solid").
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
import os
import re
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ccafl.data.datasets import DatasetError
from ccafl.data.marker import MARKER_NAME, replaceable, write_marker

# --------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the benchmark; the same spec renders byte-identical files."""

    seed: int = 0
    n_cameras: int = 4
    n_train_ids: int = 96
    n_test_ids: int = 96
    n_pretrain_ids: int = 2000
    cameras_per_id: tuple[int, int] = (2, 4)
    frames_per_camera: tuple[int, int] = (3, 6)
    height: int = 64
    width: int = 32
    shift_strength: float = 0.6
    n_distractors: int = 40
    n_junk: int = 20
    ids_per_look: int = 2
    detail_strength: float = 1.0
    caption_noise: float = 0.1
    pretrain_frames: tuple[int, int] = (1, 2)
    pretrain_photometry: float = 1.0
    caption_parts: tuple[int, int] = (3, 5)

    def __post_init__(self) -> None:
        for name in ("cameras_per_id", "frames_per_camera", "pretrain_frames", "caption_parts"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"{name} must be an inclusive (low, high) pair, got {value}")
            object.__setattr__(self, name, value)
        low_cams, high_cams = self.cameras_per_id
        if self.n_cameras < 2:
            raise ValueError("n_cameras must be >= 2: ICS needs cross-camera matches")
        if low_cams < 2 or low_cams > self.n_cameras:
            raise ValueError(
                f"cameras_per_id must lie in [2, n_cameras], got {self.cameras_per_id}"
            )
        if high_cams > self.n_cameras:
            # A world with fewer cameras than the default range's top (n_cameras: 3 with
            # [2, 4]) sees each person in at most all of its cameras.
            object.__setattr__(self, "cameras_per_id", (low_cams, self.n_cameras))
        if self.frames_per_camera[0] < 1 or self.pretrain_frames[0] < 1:
            raise ValueError("frames_per_camera and pretrain_frames must be >= 1")
        if self.ids_per_look < 1:
            raise ValueError("ids_per_look must be >= 1")
        if self.detail_strength < 0 or not 0 <= self.caption_noise <= 1:
            raise ValueError("need detail_strength >= 0 and 0 <= caption_noise <= 1")
        if self.n_train_ids < 1 or self.n_test_ids < 1 or self.n_pretrain_ids < 0:
            raise ValueError("need n_train_ids >= 1, n_test_ids >= 1, n_pretrain_ids >= 0")
        if self.n_train_ids + self.n_test_ids + self.n_pretrain_ids > 9999:
            raise ValueError("at most 9999 identities fit the 4-digit Market-1501 pid")
        if self.n_cameras > 9:
            raise ValueError("at most 9 cameras fit the Market-1501 'c{cam}' naming")
        if self.height < 16 or self.width < 8:
            raise ValueError("images must be at least 16x8 (HxW)")
        if self.shift_strength < 0:
            raise ValueError("shift_strength must be >= 0")
        if self.n_distractors < 0 or self.n_junk < 0:
            raise ValueError("n_distractors and n_junk must be >= 0")

    @classmethod
    def from_config(cls, cfg: dict | None) -> SyntheticSpec:
        """Build from a plain config dict; missing keys take defaults, unknown keys are errors."""
        cfg = dict(cfg or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in cfg:
            if key not in known:
                raise ValueError(f"unknown synthetic config key: {key!r}")
        kwargs: dict = {}
        for key, value in cfg.items():
            default = known[key].default
            if isinstance(default, tuple):
                kwargs[key] = tuple(int(v) for v in value)
            elif isinstance(default, float):
                kwargs[key] = float(value)
            else:
                kwargs[key] = int(value)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


# --------------------------------------------------------------------------------------------
# Attribute vocabulary: name -> RGB, with sampling weights (common colours are common, which
# makes near-duplicate identities frequent).

UPPER_COLORS = {
    "black": (28, 28, 30),
    "white": (232, 232, 228),
    "gray": (128, 128, 130),
    "red": (196, 32, 38),
    "blue": (40, 72, 188),
    "green": (38, 138, 62),
    "yellow": (228, 200, 44),
    "purple": (118, 52, 150),
    "pink": (236, 132, 172),
    "brown": (118, 76, 42),
    "orange": (236, 122, 32),
}
LOWER_COLORS = {
    "black": (30, 30, 34),
    "blue": (48, 64, 120),
    "gray": (110, 110, 115),
    "brown": (105, 72, 45),
    "beige": (196, 178, 138),
    "white": (225, 225, 220),
    "green": (64, 88, 52),
}
SHOE_COLORS = {
    "black": (25, 25, 25),
    "white": (235, 235, 235),
    "brown": (100, 62, 35),
    "gray": (135, 135, 135),
}
HAIR_COLORS = {
    "black": (22, 20, 20),
    "brown": (88, 54, 30),
    "blond": (212, 182, 112),
    "gray": (168, 168, 168),
}
SKIN_TONES = {
    "light": (238, 204, 178),
    "medium": (206, 160, 124),
    "tan": (164, 114, 80),
    "dark": (96, 66, 46),
}
BAG_COLORS = {
    "black": (30, 30, 32),
    "brown": (110, 70, 40),
    "gray": (120, 120, 124),
    "red": (180, 36, 40),
    "blue": (44, 70, 160),
}
BUILD_WIDTH = {"slim": 0.85, "average": 1.0, "heavy": 1.25}
HEIGHT_FACTOR = {"short": 0.92, "medium": 0.97, "tall": 1.02}
VIEWS = ("front", "back", "side")

# attribute -> (values, weights)
ATTRIBUTE_CHOICES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "upper_color": (
        tuple(UPPER_COLORS),
        (0.18, 0.14, 0.14, 0.08, 0.12, 0.07, 0.05, 0.04, 0.05, 0.06, 0.04),
    ),
    "upper_pattern": (("solid", "striped", "checked", "logo"), (0.55, 0.18, 0.12, 0.15)),
    "lower_color": (tuple(LOWER_COLORS), (0.3, 0.25, 0.15, 0.08, 0.1, 0.05, 0.07)),
    "shoes": (tuple(SHOE_COLORS), (0.4, 0.3, 0.15, 0.15)),
    "hair": (tuple(HAIR_COLORS), (0.45, 0.3, 0.15, 0.1)),
    "hair_length": (("short", "long"), (0.6, 0.4)),
    "skin": (tuple(SKIN_TONES), (0.3, 0.3, 0.2, 0.2)),
    "bag": (("none", "backpack", "handbag", "shoulder bag"), (0.4, 0.25, 0.15, 0.2)),
    "bag_color": (tuple(BAG_COLORS), (0.4, 0.2, 0.2, 0.1, 0.1)),
    "body": (tuple(BUILD_WIDTH), (0.3, 0.45, 0.25)),
    "height": (tuple(HEIGHT_FACTOR), (0.25, 0.5, 0.25)),
}
# Per-image caption columns (null where the attribute is not visible in that image).
ATTRIBUTE_COLUMNS = (
    "upper_color",
    "upper_pattern",
    "lower_color",
    "shoes",
    "hair",
    "hair_length",
    "skin",
    "bag",
    "bag_color",
    "body",
    "height",
    "view",
)

# Label map values used while drawing a person (0 = background).
BG, SKIN, HAIR, UPPER, LOWER, SHOES, BAG, STRAP, LOGO, OCCLUDER, BELT, COLLAR, HAT = range(13)
N_LABELS = 13
IS_PERSON = np.array([lab not in (BG, OCCLUDER) for lab in range(N_LABELS)])
# Colours of the details no caption names (belt, collar, cap, the second colour of a pattern).
DETAIL_COLORS = {
    "black": (25, 25, 28),
    "white": (236, 236, 232),
    "navy": (30, 40, 90),
    "red": (178, 34, 40),
    "yellow": (222, 190, 50),
    "gray": (128, 128, 130),
    "tan": (180, 140, 90),
    "green": (40, 110, 60),
}
# Minimum label pixels (at the 2x drawing resolution, per 64x32 output) for an attribute to count
# as visible in the caption.
VISIBLE_PIXELS = {SKIN: 16, HAIR: 12, UPPER: 40, LOWER: 40, SHOES: 10, BAG: 24, LOGO: 6}

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)s\d+_(\d+)_\d+\.jpg$")
SPLIT_FOLDERS = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
    "pretrain": "pretrain",
}


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent stream per (seed, keys): results never depend on rendering order."""
    words = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(words)


def _pick(rng: np.random.Generator, values: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=float)
    return str(values[rng.choice(len(values), p=p / p.sum())])


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


# --------------------------------------------------------------------------------------------
# Cameras


@dataclass
class CameraModel:
    """One camera's signature; every departure from the neutral camera is scaled by strength."""

    index: int  # 0-based
    gains: np.ndarray  # (3,) per-channel gain: colour temperature and tint
    global_gain: float
    gamma: float
    saturation: float
    background: np.ndarray  # (2H + 2m, 2W + 2m, 3) float32, cropped per frame
    view_probs: np.ndarray  # (3,) over VIEWS
    scale: float  # person height relative to the neutral framing
    offset_x: float  # fraction of width
    offset_y: float  # fraction of height
    blur: float  # Gaussian radius at output resolution
    noise: float  # std of additive noise (0-255 scale)
    jpeg_quality: int
    occlusion_prob: float
    occluder_kind: str  # "bottom" or "side": the camera's typical occluder
    occluder_kind_prob: float  # chance an occluder is of the typical kind
    occluder_color: np.ndarray
    light_shift: float  # horizontal shift of the shading highlight, in body half-widths


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]):
    small = (rng.random(cells) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(img, np.float32) / 255.0 - 0.5


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, np.float32) * 255


def _render_background(
    rng: np.random.Generator,
    shape: tuple[int, int],
    wall: np.ndarray,
    floor: np.ndarray,
    style: int,
) -> np.ndarray:
    """Wall above a horizon, floor below, plus low-frequency texture and a style motif."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * float(rng.uniform(0.45, 0.68))
    is_floor = (yy > horizon)[..., None]
    img = np.where(is_floor, floor, wall).astype(np.float32)
    img *= 1 + 0.25 * _smooth_noise(rng, shape, (5, 3))[..., None]
    if style == 0:  # floor tiles
        period = float(rng.uniform(7, 12))
        lines = ((yy % period) < 1.2) | ((xx % period) < 1.2)
        img *= np.where(is_floor & lines[..., None], 0.75, 1.0)
    elif style == 1:  # shop-front columns on the wall
        period = float(rng.uniform(10, 18))
        bands = ((xx % period) < period * 0.35)[..., None]
        img *= np.where(~is_floor & bands, 1.25, 1.0)
    elif style == 2:  # strong vertical gradient (sunlit / shadowed)
        img *= (0.7 + 0.6 * yy / h)[..., None]
    else:  # speckled asphalt
        img *= 1 + 0.18 * (rng.random((h, w, 1)).astype(np.float32) - 0.5)
    return np.clip(img, 0, 255)


def _camera_background(rng: np.random.Generator, shape: tuple[int, int], hue: float, style: int):
    wall = _hsv_to_rgb(hue, float(rng.uniform(0.25, 0.55)), float(rng.uniform(0.5, 0.85)))
    floor = _hsv_to_rgb(
        (hue + 0.08) % 1, float(rng.uniform(0.1, 0.35)), float(rng.uniform(0.3, 0.6))
    )
    return _render_background(rng, shape, wall, floor, style)


def sample_cameras(spec: SyntheticSpec) -> list[CameraModel]:
    """Cameras with well-spread signatures (temperatures, hues, views are spaced, then shuffled).

    All random numbers are drawn whatever the strength, so strength only scales the same shifts.
    """
    s = float(spec.shift_strength)
    mix = min(s, 1.0)
    n = spec.n_cameras
    rng = _rng(spec.seed, "cameras")
    bg_shape = (2 * spec.height + 2 * _margin(spec), 2 * spec.width + 2 * _margin(spec))
    neutral_bg = _render_background(
        _rng(spec.seed, "neutral-background"),
        bg_shape,
        np.full(3, 150, np.float32),
        np.full(3, 105, np.float32),
        style=3,
    )
    temperatures = rng.permutation(np.linspace(-1, 1, n)) + rng.uniform(-0.15, 0.15, n)
    hues = (rng.uniform() + rng.permutation(n) / n) % 1.0
    dominant_views = rng.permutation(np.arange(n) % 3)
    cameras = []
    for c in range(n):
        crng = _rng(spec.seed, "camera", c)
        tint = crng.uniform(-1, 1)
        warm = temperatures[c]
        gains = 1 + s * np.array([0.22 * warm, 0.08 * tint, -0.22 * warm])
        cam_bg = _camera_background(crng, bg_shape, float(hues[c]), int(crng.integers(4)))
        background = np.clip(neutral_bg + s * (cam_bg - neutral_bg), 0, 255).astype(np.float32)
        views = np.full(3, 1 / 3) * (1 - 0.75 * mix)
        views[dominant_views[c]] += 0.75 * mix
        cameras.append(
            CameraModel(
                index=c,
                gains=np.maximum(gains, 0.2).astype(np.float32),
                global_gain=math.exp(s * crng.uniform(-0.3, 0.3)),
                gamma=math.exp(s * crng.uniform(-0.3, 0.3)),
                saturation=max(0.0, 1 + s * crng.uniform(-0.45, 0.2)),
                background=background,
                view_probs=views / views.sum(),
                scale=1 - s * crng.uniform(0.0, 0.2),
                offset_x=s * crng.uniform(-0.08, 0.08),
                offset_y=s * crng.uniform(-0.05, 0.05),
                blur=0.2 + s * crng.uniform(0.0, 0.7),
                noise=1.5 + s * crng.uniform(0.0, 6.0),
                jpeg_quality=int(np.clip(round(92 - s * crng.uniform(0, 45)), 15, 95)),
                occlusion_prob=min(0.9, 0.05 + s * crng.uniform(0.0, 0.25)),
                occluder_kind=str(crng.choice(("bottom", "side"))),
                occluder_kind_prob=0.5 + 0.4 * mix,
                occluder_color=(128 + s * crng.uniform(-100, 100, 3))
                .clip(0, 255)
                .astype(np.float32),
                light_shift=s * crng.uniform(-0.6, 0.6),
            )
        )
    return cameras


WEB_CAMERA = -1  # camera index of pretraining photos (file names say c0)


def sample_web_camera(rng: np.random.Generator, spec: SyntheticSpec) -> CameraModel:
    """A one-off camera for one web photo of the pretraining split.

    Why: web-scale CLIP never saw the surveillance cameras a ReID benchmark comes from, but it
    saw every kind of lighting. So each pretraining photo gets its own random photometry,
    drawn from the same ranges as the benchmark cameras' scaled by
    ``spec.pretrain_photometry`` (colour cast, gain, gamma, saturation, blur, noise, JPEG
    quality), and backgrounds and framing of its own, unlike any benchmark camera.
    """
    s = spec.pretrain_photometry
    margin = _margin(spec)
    shape = (2 * spec.height + 2 * margin, 2 * spec.width + 2 * margin)
    wall = _hsv_to_rgb(
        float(rng.uniform()), float(rng.uniform(0.05, 0.45)), float(rng.uniform(0.55, 0.95))
    )
    floor = _hsv_to_rgb(
        float(rng.uniform()), float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.35, 0.8))
    )
    background = _render_background(rng, shape, wall, floor, int(rng.integers(4)))
    warm, tint = rng.uniform(-1.15, 1.15), rng.uniform(-1, 1)
    gains = 1 + s * np.array([0.22 * warm, 0.08 * tint, -0.22 * warm])
    return CameraModel(
        index=WEB_CAMERA,
        gains=np.maximum(gains, 0.2).astype(np.float32),
        global_gain=math.exp(s * rng.uniform(-0.3, 0.3)),
        gamma=math.exp(s * rng.uniform(-0.3, 0.3)),
        saturation=max(0.0, 1 + s * float(rng.uniform(-0.45, 0.2))),
        background=background,
        view_probs=np.full(3, 1 / 3),
        scale=float(rng.uniform(0.78, 1.02)),
        offset_x=float(rng.uniform(-0.08, 0.08)),
        offset_y=float(rng.uniform(-0.05, 0.05)),
        blur=0.2 + s * float(rng.uniform(0.0, 0.7)),
        noise=1.5 + s * float(rng.uniform(0.0, 6.0)),
        jpeg_quality=int(np.clip(round(92 - s * rng.uniform(0, 45)), 15, 95)),
        occlusion_prob=0.03,
        occluder_kind=str(rng.choice(("bottom", "side"))),
        occluder_kind_prob=0.5,
        occluder_color=rng.uniform(40, 220, 3).astype(np.float32),
        light_shift=float(rng.uniform(-0.3, 0.3)),
    )


def _margin(spec: SyntheticSpec) -> int:
    return max(2, spec.height // 8)


# --------------------------------------------------------------------------------------------
# Drawing a person into a label map (at 2x resolution)


@dataclass
class Pose:
    """Per-frame body configuration; view and facing change what is visible."""

    view: str
    facing: int  # +1 / -1: side-view walking direction; mirrors asymmetric items
    dx: float
    dy: float
    scale: float
    arm_swing: float  # radians
    stride: float  # fraction of person height


@dataclass
class Occluder:
    kind: str
    x0: float  # fractions of the box
    y0: float
    x1: float
    y1: float


def _limb(draw: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, label: int) -> None:
    """Quad from p0 to p1 with widths w0 / w1 at the ends."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    norm = math.hypot(dx, dy) or 1e-6
    nx, ny = -dy / norm, dx / norm
    draw.polygon(
        [
            (p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2),
            (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2),
            (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2),
        ],
        fill=label,
    )


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, label: int):
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=label)


def _box(draw: ImageDraw.ImageDraw, xa: float, ya: float, xb: float, yb: float, label: int):
    draw.rectangle((min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)), fill=label)


@dataclass
class _Body:
    """Maps person units (fractions of the person's height, x mirrored by facing) to pixels."""

    cx: float
    top: float
    hp: float  # person height in pixels
    facing: int
    width: float

    def x(self, u: float) -> float:
        """Horizontal position u person-heights in front of the body axis."""
        return self.cx + self.facing * u * self.hp

    def y(self, v: float) -> float:
        """Vertical position v person-heights below the top of the head."""
        return self.top + v * self.hp

    def span(self, v: float) -> float:
        """A length of v person-heights."""
        return v * self.hp


def _draw_legs(draw, body: _Body, pose: Pose, side: bool, identity: Identity) -> None:
    hip_half = (0.075 if side else 0.105) * body.width
    leg_w = body.span(0.085 * body.width**0.6 * identity.leg_width)
    waist = identity.waist
    hip_y = waist + 0.025
    _box(
        draw,
        body.x(-hip_half),
        body.y(waist - 0.015),
        body.x(hip_half),
        body.y(waist + 0.065),
        LOWER,
    )

    def leg(hip_x: float, ankle_x: float) -> None:
        _limb(draw, (hip_x, body.y(hip_y)), (ankle_x, body.y(0.93)), leg_w, leg_w * 0.75, LOWER)
        if identity.shorts:  # bare lower legs below the knee
            knee = (hip_x + (ankle_x - hip_x) * 0.5, body.y(hip_y + (0.93 - hip_y) * 0.5))
            _limb(draw, knee, (ankle_x, body.y(0.93)), leg_w * 0.8, leg_w * 0.7, SKIN)

    if side:
        ankles = [(body.x(pose.stride), body.x(0.0)), (body.x(-pose.stride), body.x(0.0))]
        for ankle_x, hip_x in ankles:
            leg(hip_x, ankle_x)
            front = ankle_x + body.facing * body.span(0.06)
            _box(
                draw,
                ankle_x - body.facing * body.span(0.025),
                body.y(0.925),
                front,
                body.y(0.985),
                SHOES,
            )
        return
    for sign in (-1, 1):
        hip_x = body.x(sign * hip_half * 0.5)
        ankle_x = body.x(sign * (hip_half * 0.5 + 0.01 + pose.stride * 0.15))
        leg(hip_x, ankle_x)
        _ellipse(
            draw, ankle_x, body.y(0.955), body.span(0.04 * body.width**0.3), body.span(0.032), SHOES
        )


def _arm(
    draw,
    body: _Body,
    shoulder: tuple[float, float],
    hand: tuple[float, float],
    long_sleeve: bool = False,
) -> None:
    width = body.span(0.05 * body.width**0.7)
    elbow = ((shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2)
    _limb(draw, shoulder, elbow, width * 1.1, width, UPPER)
    _limb(draw, elbow, hand, width, width * 0.85, UPPER if long_sleeve else SKIN)
    _ellipse(draw, hand[0], hand[1], width * 0.55, width * 0.6, SKIN)


def _hands(body: _Body, pose: Pose, side: bool, shoulder_half: float) -> list[tuple[float, float]]:
    """Hand positions; in side view the first entry is the near (visible) hand."""
    if side:
        reach = 0.32
        return [
            (
                body.x(math.sin(pose.arm_swing) * reach),
                body.y(0.18 + math.cos(pose.arm_swing) * reach),
            ),
            (
                body.x(-math.sin(pose.arm_swing) * reach),
                body.y(0.18 + math.cos(pose.arm_swing) * reach),
            ),
        ]
    spread = shoulder_half + 0.015 + 0.03 * abs(pose.arm_swing)
    return [(body.x(-spread), body.y(0.5)), (body.x(spread), body.y(0.5))]


def draw_person(
    identity: Identity, pose: Pose, body: _Body, size: tuple[int, int], occluder: Occluder | None
) -> np.ndarray:
    """Label map (uint8, 0 = background) of one person; drawing order encodes what hides what."""
    h2, w2 = size
    canvas = Image.new("L", (w2, h2), BG)
    draw = ImageDraw.Draw(canvas)
    a = identity.attrs
    side = pose.view == "side"
    front = pose.view == "front"
    back = pose.view == "back"
    shoulder_half = (0.085 if side else 0.135) * body.width * identity.shoulder
    waist_half = (0.08 if side else 0.112) * body.width
    waist = identity.waist
    sleeves = identity.long_sleeves
    bag_scale = identity.bag_scale
    long_hair = a["hair_length"] == "long"
    bag = a["bag"]
    hands = _hands(body, pose, side, shoulder_half)
    head_x, head_y = body.x(0.01 if side else 0.0), body.y(0.075)
    head_rx, head_ry = (
        body.span(0.052 * identity.head_scale),
        body.span(0.068 * identity.head_scale),
    )

    if long_hair and not back:  # hair behind the shoulders, seen at the sides of the face
        back_x = head_x - body.facing * body.span(0.02) if side else head_x
        _box(draw, back_x - head_rx * 1.1, head_y, back_x + head_rx * 1.1, body.y(0.26), HAIR)
    if bag == "backpack" and front:  # hidden behind the torso; only the straps show
        _box(
            draw,
            body.x(-0.08 * body.width),
            body.y(0.18),
            body.x(0.08 * body.width),
            body.y(0.42),
            BAG,
        )
    if side:  # far arm, mostly hidden by the torso
        _arm(draw, body, (body.x(0.0), body.y(0.18)), hands[1], sleeves)
    _draw_legs(draw, body, pose, side, identity)
    torso = [
        (body.x(-shoulder_half), body.y(0.165)),
        (body.x(shoulder_half), body.y(0.165)),
        (body.x(waist_half), body.y(waist)),
        (body.x(-waist_half), body.y(waist)),
    ]
    draw.polygon(torso, fill=UPPER)
    if identity.belt:
        _box(
            draw,
            body.x(-waist_half * 1.02),
            body.y(waist - 0.014),
            body.x(waist_half * 1.02),
            body.y(waist + 0.01),
            BELT,
        )
    if bag == "backpack" and side:
        _box(
            draw,
            body.x(-shoulder_half - 0.07),
            body.y(0.18),
            body.x(-shoulder_half + 0.02),
            body.y(0.43),
            BAG,
        )
    if not side:
        for sign, hand in zip((-1, 1), hands, strict=True):
            _arm(draw, body, (body.x(sign * (shoulder_half - 0.025)), body.y(0.18)), hand, sleeves)
    _box(draw, body.x(-0.025), body.y(0.12), body.x(0.025), body.y(0.17), SKIN)  # neck
    if identity.collar:
        half = 0.06 if not side else 0.045
        _box(draw, body.x(-half), body.y(0.158), body.x(half), body.y(0.19), COLLAR)
    if back:
        _ellipse(draw, head_x, head_y, head_rx * 1.05, head_ry * 1.02, HAIR)
        if long_hair:
            _box(draw, head_x - head_rx, head_y, head_x + head_rx, body.y(0.3), HAIR)
    else:
        _ellipse(draw, head_x, head_y, head_rx, head_ry, SKIN)
        if side:  # hair over the back of the head
            hx = head_x - body.facing * head_rx * 0.35
            _ellipse(draw, hx, head_y - head_ry * 0.25, head_rx * 0.9, head_ry * 0.85, HAIR)
        else:
            draw.chord(
                (
                    head_x - head_rx * 1.08,
                    head_y - head_ry * 1.1,
                    head_x + head_rx * 1.08,
                    head_y + head_ry * 0.6,
                ),
                180,
                360,
                fill=HAIR,
            )
    if identity.cap:  # a cap over the top of the head (drawn over the hair)
        draw.chord(
            (
                head_x - head_rx * 1.12,
                head_y - head_ry * 1.18,
                head_x + head_rx * 1.12,
                head_y + head_ry * 0.2,
            ),
            180,
            360,
            fill=HAT,
        )
        if side:  # the peak
            _box(
                draw,
                head_x,
                head_y - head_ry * 0.5,
                head_x + body.facing * head_rx * 1.6,
                head_y - head_ry * 0.3,
                HAT,
            )
    if front and a["upper_pattern"] == "logo":
        _box(draw, body.x(-0.035), body.y(0.23), body.x(0.035), body.y(0.29), LOGO)
    if side:
        _arm(draw, body, (body.x(0.0), body.y(0.18)), hands[0], sleeves)
    if bag == "backpack" and front:
        for sign in (-1, 1):
            p0 = (body.x(sign * 0.065 * body.width), body.y(0.165))
            p1 = (body.x(sign * 0.075 * body.width), body.y(0.34))
            _limb(draw, p0, p1, body.span(0.018), body.span(0.018), STRAP)
    elif bag == "backpack" and back:
        _box(
            draw,
            body.x(-0.085 * body.width * bag_scale),
            body.y(0.18),
            body.x(0.085 * body.width * bag_scale),
            body.y(0.18 + 0.25 * bag_scale),
            BAG,
        )
    elif bag == "shoulder bag":
        carry = identity.bag_side * (-1 if back else 1)
        hip_x = body.x(0.0) if side else body.x(carry * (waist_half + 0.02))
        if not side:
            shoulder = (body.x(-carry * shoulder_half * 0.7), body.y(0.17))
            _limb(draw, shoulder, (hip_x, body.y(0.46)), body.span(0.02), body.span(0.02), STRAP)
        half, top = body.span(0.05 * bag_scale), 0.55 - 0.11 * bag_scale
        _box(draw, hip_x - half, body.y(top), hip_x + half, body.y(0.55), BAG)
    elif bag == "handbag":
        carry = identity.bag_side * (-1 if back else 1)
        hand = hands[0] if side else hands[0 if carry < 0 else 1]
        _box(
            draw,
            hand[0] - body.span(0.045 * bag_scale),
            hand[1] + body.span(0.01),
            hand[0] + body.span(0.045 * bag_scale),
            hand[1] + body.span(0.01 + 0.09 * bag_scale),
            BAG,
        )
    if occluder is not None:
        _box(draw, occluder.x0 * w2, occluder.y0 * h2, occluder.x1 * w2, occluder.y1 * h2, OCCLUDER)
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------
# Colouring, camera transform, captions


@dataclass
class Frame:
    """Everything random about one image, drawn from its own stream."""

    pose: Pose
    bg_offset: tuple[int, int]
    brightness: float
    occluder: Occluder | None
    zoom: float = 1.0  # > 1 crops into the person (distractors)
    extra_blur: float = 0.0  # junk images


def _sample_occluder(rng: np.random.Generator, camera: CameraModel) -> Occluder:
    other = "side" if camera.occluder_kind == "bottom" else "bottom"
    kind = camera.occluder_kind if rng.random() < camera.occluder_kind_prob else other
    if kind == "bottom":
        return Occluder(
            kind, rng.uniform(-0.3, 0.3), rng.uniform(0.62, 0.85), rng.uniform(0.7, 1.3), 1.0
        )
    width = rng.uniform(0.2, 0.4)
    left = rng.random() < 0.5
    return Occluder(
        kind, 0.0 if left else 1 - width, rng.uniform(0.0, 0.3), width if left else 1.0, 1.0
    )


def sample_frame(
    rng: np.random.Generator, camera: CameraModel, view: str, facing: int, margin: int
) -> Frame:
    """Per-frame jitter: small offsets, scale, arm and leg positions, background crop, light."""
    pose = Pose(
        view=view,
        facing=facing,
        dx=float(rng.uniform(-0.04, 0.04)),
        dy=float(rng.uniform(-0.02, 0.02)),
        scale=float(rng.uniform(0.95, 1.05)),
        arm_swing=float(rng.uniform(-0.5, 0.5)),
        stride=float(rng.uniform(0.02, 0.12)),
    )
    occluder = _sample_occluder(rng, camera) if rng.random() < camera.occlusion_prob else None
    return Frame(
        pose=pose,
        bg_offset=(int(rng.integers(0, 2 * margin + 1)), int(rng.integers(0, 2 * margin + 1))),
        brightness=float(rng.uniform(0.92, 1.08)),
        occluder=occluder,
    )


class Renderer:
    """Renders frames of identities through camera models into uint8 images."""

    def __init__(self, spec: SyntheticSpec, cameras: list[CameraModel]):
        self.spec = spec
        self.cameras = cameras
        self.size2 = (2 * spec.height, 2 * spec.width)
        self.margin = _margin(spec)
        self.rows = np.arange(self.size2[0], dtype=np.float64)
        self.columns = np.arange(self.size2[1], dtype=np.float64)

    def body(self, identity: Identity, camera: CameraModel, frame: Frame) -> _Body:
        h2, w2 = self.size2
        pose = frame.pose
        hp = h2 * 0.88 * camera.scale * identity.height_factor * pose.scale * frame.zoom
        top = (h2 - hp) / 2 + (camera.offset_y + pose.dy) * h2
        cx = w2 / 2 + (camera.offset_x + pose.dx) * w2
        return _Body(cx=cx, top=top, hp=hp, facing=pose.facing, width=identity.width)

    def render(
        self, identity: Identity, camera: CameraModel, frame: Frame, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (uint8 HxWx3 image, per-label pixel counts of the 2x label map)."""
        body = self.body(identity, camera, frame)
        labels = draw_person(identity, frame.pose, body, self.size2, frame.occluder)
        scene = self._colour(identity, camera, frame, body, labels)
        return self._camera(scene, camera, frame, rng), np.bincount(
            labels.ravel(), minlength=N_LABELS
        )

    def _colour(
        self, identity: Identity, camera: CameraModel, frame: Frame, body: _Body, labels: np.ndarray
    ) -> np.ndarray:
        h2, w2 = self.size2
        colors = identity.colors.copy()
        colors[OCCLUDER] = camera.occluder_color
        img = np.take(colors, labels, axis=0)
        pattern = identity.attrs["upper_pattern"]
        if pattern in ("striped", "checked"):
            period = identity.stripe_period * body.hp
            duty = identity.stripe_duty
            on = (((self.rows - body.top) / period % 1.0) < duty)[:, None]
            if pattern == "checked":
                on = on ^ (((self.columns - body.cx) / period % 1.0) < duty)[None, :]
            img[(labels == UPPER) & on] = identity.pattern_color
        # cylinder-like shading across the body, highlight shifted by the camera's light
        half = max(body.span(0.135 * body.width), 1.0)
        rel = (self.columns - body.cx - camera.light_shift * half) / (1.4 * half)
        shade = (1.0 - 0.3 * np.minimum(rel * rel, 1.0)).astype(np.float32)
        img *= np.where(IS_PERSON[labels], shade, np.float32(1.0))[..., None]
        oy, ox = frame.bg_offset
        np.copyto(
            img, camera.background[oy : oy + h2, ox : ox + w2], where=(labels == BG)[..., None]
        )
        # anti-aliased 2x -> 1x downsample (2x2 box), with the frame's light level
        img = img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2]
        return img * np.float32(0.25 * frame.brightness)

    def _camera(
        self, scene: np.ndarray, camera: CameraModel, frame: Frame, rng: np.random.Generator
    ) -> np.ndarray:
        """Sensor model: colour cast, gain, saturation, optics blur, gamma, noise."""
        img = scene * (camera.gains * camera.global_gain)
        grey = img.mean(axis=2, keepdims=True)
        img = grey + camera.saturation * (img - grey)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        radius = camera.blur + frame.extra_blur
        if radius > 0.05:
            pil = pil.filter(ImageFilter.GaussianBlur(radius))
        img = np.asarray(pil, np.float32) / 255.0
        img = np.power(img, camera.gamma) * 255.0
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(camera.noise)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def visible_attributes(identity: Identity, pose: Pose, counts: np.ndarray) -> dict[str, str | None]:
    """Attributes as seen in one image; None where hidden (view, occlusion, out of frame)."""
    a = identity.attrs

    def seen(label: int) -> bool:
        return bool(counts[label] >= VISIBLE_PIXELS[label])

    upper = seen(UPPER)
    pattern = a["upper_pattern"]
    if pattern == "logo" and not seen(LOGO):
        pattern = "solid"
    has_bag = a["bag"] != "none"
    bag_seen = has_bag and seen(BAG)
    return {
        "upper_color": a["upper_color"] if upper else None,
        "upper_pattern": pattern if upper else None,
        "lower_color": a["lower_color"] if seen(LOWER) else None,
        "shoes": a["shoes"] if seen(SHOES) else None,
        "hair": a["hair"] if seen(HAIR) else None,
        "hair_length": a["hair_length"] if seen(HAIR) else None,
        "skin": a["skin"] if seen(SKIN) else None,
        "bag": a["bag"] if bag_seen else ("none" if not has_bag else None),
        "bag_color": a["bag_color"] if bag_seen else None,
        "body": a["body"],
        "height": a["height"],
        "view": pose.view,
    }


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# Caption parts and the attributes each names (the first is the one noise may falsify).
CAPTION_PARTS = {
    "build": ("height", "body"),
    "skin": ("skin",),
    "hair": ("hair", "hair_length"),
    "upper": ("upper_color", "upper_pattern"),
    "lower": ("lower_color",),
    "shoes": ("shoes",),
    "bag": ("bag_color", "bag"),
}


def web_caption(
    visible: dict[str, str | None],
    rng: np.random.Generator,
    noise: float,
    parts: tuple[int, int] = (3, 5),
) -> str:
    """Alt-text-like caption: ``parts`` (low, high) of the visible parts, each wrong with
    probability ``noise``.

    Why: web captions name a few salient things and are sometimes wrong; a caption that names
    every attribute of a person would make caption pretraining a ReID model already.
    """
    present = [
        part
        for part, attrs in CAPTION_PARTS.items()
        if visible[attrs[0]] is not None and (part != "bag" or visible["bag"] not in (None, "none"))
    ]
    low, high = parts
    n_named = min(len(present), int(rng.integers(low, high + 1)))
    chosen = set(rng.choice(present, size=n_named, replace=False).tolist()) if present else set()
    said: dict[str, str | None] = dict.fromkeys(visible)
    # In a fixed order (not the set's, which depends on string hashing), so every run draws
    # the same noise: the same spec must render byte-identical files.
    for part in [part for part in CAPTION_PARTS if part in chosen]:
        for attr in CAPTION_PARTS[part]:
            said[attr] = visible[attr]
        if rng.random() < noise:
            attr = CAPTION_PARTS[part][0]
            values, weights = ATTRIBUTE_CHOICES[attr]
            wrong = [i for i, value in enumerate(values) if value != said[attr]]
            said[attr] = _pick(
                rng, tuple(values[i] for i in wrong), tuple(weights[i] for i in wrong)
            )
    return caption_for(said)


def caption_for(visible: dict[str, str | None]) -> str:
    """One English sentence naming every attribute given (None: not named)."""
    words = [
        {"short": "short", "tall": "tall"}.get(visible["height"] or "", ""),
        {"slim": "slim", "heavy": "heavy"}.get(visible["body"] or "", ""),
        "person",
    ]
    text = "a photo of " + _article(" ".join(w for w in words if w))
    traits = []
    if visible["skin"]:
        traits.append(f"{visible['skin']} skin")
    if visible["hair"]:
        traits.append(f"{visible['hair_length']} {visible['hair']} hair")
    if traits:
        text += " with " + " and ".join(traits)
    items = []
    if visible["upper_color"]:
        shirt = {
            "solid": f"{visible['upper_color']} shirt",
            "striped": f"{visible['upper_color']} striped shirt",
            "checked": f"{visible['upper_color']} checked shirt",
            "logo": f"{visible['upper_color']} shirt with a logo",
        }[visible["upper_pattern"] or "solid"]
        items.append(_article(shirt))
    if visible["lower_color"]:
        items.append(f"{visible['lower_color']} trousers")
    if visible["shoes"]:
        items.append(f"{visible['shoes']} shoes")
    if visible["bag"] not in (None, "none"):
        items.append(_article(f"{visible['bag_color']} {visible['bag']}"))
    if items:
        text += " wearing " + _join(items)
    return text + "."


# --------------------------------------------------------------------------------------------
# Dataset plan: which image of whom, in which camera, in which split


@dataclass
class ImageJob:
    split: str
    name: str
    identity: Identity
    camera: int
    frame_key: tuple  # stream keys of this image's frame randomness
    view: str
    facing: int
    kind: str = "person"  # person / distractor / junk


def _market_name(pid: int, camera: int, frame: int) -> str:
    pid_text = "-1" if pid < 0 else f"{pid:04d}"
    return f"{pid_text}_c{camera + 1}s1_{frame:06d}_00.jpg"


def _appearances(spec: SyntheticSpec, cameras: list[CameraModel], identity: Identity):
    """Cameras, frame numbers, view and facing of one identity: yields (cam, frames, view, facing)."""
    rng = _rng(spec.seed, "appearance", identity.pid)
    n_cams = int(rng.integers(spec.cameras_per_id[0], spec.cameras_per_id[1] + 1))
    for cam in sorted(int(c) for c in rng.choice(spec.n_cameras, size=n_cams, replace=False)):
        n_frames = int(rng.integers(spec.frames_per_camera[0], spec.frames_per_camera[1] + 1))
        frames = int(rng.integers(1, 4000)) + np.cumsum(rng.integers(5, 40, size=n_frames))
        view = VIEWS[int(rng.choice(3, p=cameras[cam].view_probs))]
        facing = int(rng.choice((-1, 1)))
        yield cam, [int(f) for f in frames], view, facing


def plan_dataset(spec: SyntheticSpec, cameras: list[CameraModel]) -> list[ImageJob]:
    """Every image to render. Query: one frame per (test identity, camera) with >= 2 frames there,
    so the camera keeps a gallery frame and every query has a cross-camera gallery match.
    Pretraining: 1-2 web photos per person (`sample_web_camera`), none by a benchmark camera."""
    n_tr, n_te = spec.n_train_ids, spec.n_test_ids
    splits = {
        "train": list(range(1, n_tr + 1)),
        "test": list(range(n_tr + 1, n_tr + n_te + 1)),
    }
    jobs: list[ImageJob] = []
    for split, pids in splits.items():
        people = sample_identities(spec.seed, split, pids, spec.ids_per_look, spec.detail_strength)
        for identity in people:
            for cam, frames, view, facing in _appearances(spec, cameras, identity):
                query_frame = None
                if split == "test" and len(frames) >= 2:
                    query_frame = frames[
                        int(_rng(spec.seed, "query", identity.pid, cam).integers(len(frames)))
                    ]
                for frame in frames:
                    out_split = split
                    if split == "test":
                        out_split = "query" if frame == query_frame else "gallery"
                    name = _market_name(identity.pid, cam, frame)
                    key = ("frame", identity.pid, cam, frame)
                    jobs.append(ImageJob(out_split, name, identity, cam, key, view, facing))
    first = n_tr + n_te + 1
    pretrain = list(range(first, first + spec.n_pretrain_ids))
    for identity in sample_identities(spec.seed, "pretrain", pretrain, 1, spec.detail_strength):
        rng = _rng(spec.seed, "web", identity.pid)
        low, high = spec.pretrain_frames
        for shot in range(int(rng.integers(low, high + 1))):
            view, facing = VIEWS[int(rng.integers(3))], int(rng.choice((-1, 1)))
            name = _market_name(identity.pid, WEB_CAMERA, shot + 1)
            key = ("web", identity.pid, shot)
            jobs.append(ImageJob("pretrain", name, identity, WEB_CAMERA, key, view, facing))
    jobs += _clutter_jobs(spec, "distractor", spec.n_distractors, pid=0)
    jobs += _clutter_jobs(spec, "junk", spec.n_junk, pid=-1)
    return jobs


def _clutter_jobs(spec: SyntheticSpec, kind: str, count: int, pid: int) -> list[ImageJob]:
    """Gallery distractors (partial people, pid 0) and junk (blurred fragments, pid -1)."""
    if count == 0:
        return []
    people = sample_identities(spec.seed, kind, list(range(count)), 1, spec.detail_strength)
    rng = _rng(spec.seed, kind, "plan")
    jobs, used = [], set()
    for i, person in enumerate(people):
        cam = int(rng.integers(spec.n_cameras))
        frame = int(rng.integers(1, 999999))
        while (cam, frame) in used:
            frame = int(rng.integers(1, 999999))
        used.add((cam, frame))
        view = VIEWS[int(rng.integers(3))]
        jobs.append(
            ImageJob(
                "gallery", _market_name(pid, cam, frame), person, cam, (kind, i), view, 1, kind
            )
        )
    return jobs


def _frame_for(
    job: ImageJob, camera: CameraModel, renderer: Renderer, rng: np.random.Generator
) -> Frame:
    view = job.view if rng.random() < 0.8 else VIEWS[int(rng.choice(3, p=camera.view_probs))]
    frame = sample_frame(rng, camera, view, job.facing, renderer.margin)
    if job.kind == "distractor":  # a bad detection: zoomed into part of a person, off-centre
        frame.zoom = float(rng.uniform(1.5, 2.5))
        frame.pose.dy += float(rng.uniform(-0.5, 0.3))
        frame.pose.dx += float(rng.uniform(-0.3, 0.3))
    elif job.kind == "junk":  # barely anything recognisable
        frame.zoom = float(rng.uniform(2.0, 3.5))
        frame.pose.dy += float(rng.uniform(-0.6, 0.6))
        frame.extra_blur = float(rng.uniform(1.5, 3.0))
    return frame


def _render_job(job: ImageJob, renderer: Renderer, seed: int) -> tuple[np.ndarray, dict, str, int]:
    """(image, visible attributes, caption, JPEG quality of the camera that took it)."""
    rng = _rng(seed, *job.frame_key)
    if job.camera == WEB_CAMERA:
        camera = sample_web_camera(_rng(seed, "web-camera", *job.frame_key), renderer.spec)
    else:
        camera = renderer.cameras[job.camera]
    frame = _frame_for(job, camera, renderer, rng)
    image, counts = renderer.render(job.identity, camera, frame, rng)
    visible = visible_attributes(job.identity, frame.pose, counts)
    if job.kind == "person":
        caption_rng = _rng(seed, "caption", *job.frame_key)
        spec = renderer.spec
        caption = web_caption(visible, caption_rng, spec.caption_noise, spec.caption_parts)
    elif job.kind == "distractor":
        shirt = visible["upper_color"]
        caption = "a cropped photo of part of a person" + (
            f" in {_article(shirt)} shirt." if shirt else "."
        )
    else:
        caption = "a blurry photo with no clearly visible person."
        visible = dict.fromkeys(ATTRIBUTE_COLUMNS)
    return image, visible, caption, camera.jpeg_quality


# --------------------------------------------------------------------------------------------
# Writing


def _remove_stale_tmp_dirs(root: Path) -> None:
    """Delete leftovers of interrupted runs (tmp dirs whose process is gone, or our own)."""
    for path in root.parent.glob(f"{root.name}.tmp-*"):
        pid_text = path.name.rsplit("-", 1)[-1]
        alive = False
        if pid_text.isdigit() and int(pid_text) != os.getpid():
            try:
                os.kill(int(pid_text), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(path, ignore_errors=True)


def _replace_dir(tmp: Path, root: Path) -> None:
    """Swap tmp in for root; a reader sees either the old dataset, none, or the new one."""
    old = None
    if root.exists() or root.is_symlink():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(root, old)
    os.replace(tmp, root)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def synthesize(root: str | Path, spec: SyntheticSpec, progress: bool = True) -> dict:
    """Render the benchmark under root; return a summary dict (counts per split, seconds).

    Rendering happens in ``<root>.tmp-<pid>`` which is renamed to root at the end, so an
    interrupted run never leaves a complete-looking half dataset. An existing root is replaced
    only if this function created it (`ccafl.data.marker`): a folder of a user's is never
    touched, whatever the config says.
    """
    start = time.perf_counter()
    root = Path(root).absolute()
    if not replaceable(root):
        raise DatasetError(
            f"refusing to write the synthetic benchmark into {root}: that folder exists and was "
            f"not created by ccafl synthesize (no {MARKER_NAME} file in it); point dataset.root "
            "at a new folder under resources/, or set dataset.format to the dataset's real format"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(root)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        rows = _render_all(tmp, spec, progress)
        captions = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
        captions.to_parquet(tmp / "captions.parquet", index=False)
        (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
        write_marker(tmp)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = captions["split"].value_counts()
    person = captions[captions["pid"] > 0]
    return {
        "root": str(root),
        "images": {split: int(counts.get(split, 0)) for split in SPLIT_FOLDERS},
        "identities": {
            split: int(person.loc[person["split"] == split, "pid"].nunique())
            for split in SPLIT_FOLDERS
        },
        "distractors": int((captions["pid"] == 0).sum()),
        "junk": int((captions["pid"] == -1).sum()),
        "cameras": spec.n_cameras,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _render_all(out: Path, spec: SyntheticSpec, progress: bool) -> list[dict]:
    cameras = sample_cameras(spec)
    renderer = Renderer(spec, cameras)
    jobs = plan_dataset(spec, cameras)
    for folder in SPLIT_FOLDERS.values():
        (out / folder).mkdir()
    rows = []
    for job in tqdm(jobs, desc="synthesize", unit="img", disable=not progress):
        image, visible, caption, quality = _render_job(job, renderer, spec.seed)
        rel = f"{SPLIT_FOLDERS[job.split]}/{job.name}"
        Image.fromarray(image).save(out / rel, format="JPEG", quality=quality)
        pid = 0 if job.kind == "distractor" else (-1 if job.kind == "junk" else job.identity.pid)
        rows.append(
            {"path": rel, "split": job.split, "pid": pid, "camera": job.camera, "caption": caption}
            | visible
        )
    return rows


# --------------------------------------------------------------------------------------------
# Camera-bias diagnostic


def _colour_histogram(path: Path, bins: int = 8) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), np.int64) * bins // 256
    index = (rgb[..., 0] * bins + rgb[..., 1]) * bins + rgb[..., 2]
    hist = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def _parse_folder(folder: Path) -> list[tuple[Path, int, int]]:
    items = []
    for path in sorted(folder.glob("*.jpg")):
        match = MARKET_NAME.match(path.name)
        if match:
            items.append((path, int(match.group(1)), int(match.group(2))))
    return items


def camera_bias_diagnostic(root: str | Path, max_images: int | None = None) -> dict:
    """Naive colour-histogram retrieval on the test split: same-camera vs cross-camera rank-1.

    Computation: every image of ``query/`` and ``bounding_box_test/`` with pid > 0 (distractors
    and junk excluded) becomes a joint RGB histogram (8 levels per channel, 512 bins, sum 1);
    similarity is the Bhattacharyya coefficient (dot product of square-rooted histograms). A query
    counts when the gallery holds its pid both in its own camera and in another camera
    (``max_images`` keeps that many of these queries, evenly spaced over the sorted names).
    ``same_camera_rank1``: fraction of queries whose most similar gallery image *among images of
    the query's camera* has the query's pid. ``cross_camera_rank1``: the same among gallery
    images of all *other* cameras. Both are rank-1 over the same queries; a large gap means the
    naive feature matches cameras rather than people (camera bias).
    """
    root = Path(root)
    queries = [q for q in _parse_folder(root / "query") if q[1] > 0]
    gallery = [g for g in _parse_folder(root / "bounding_box_test") if g[1] > 0]
    g_pid = np.array([g[1] for g in gallery])
    g_cam = np.array([g[2] for g in gallery])
    eligible = [
        q
        for q in queries
        if np.any((g_pid == q[1]) & (g_cam == q[2])) and np.any((g_pid == q[1]) & (g_cam != q[2]))
    ]
    if max_images is not None and len(eligible) > max_images:
        keep = np.linspace(0, len(eligible) - 1, max_images).round().astype(int)
        eligible = [eligible[i] for i in keep]
    if not eligible:
        return {
            "same_camera_rank1": float("nan"),
            "cross_camera_rank1": float("nan"),
            "n_queries": 0,
        }
    g_feat = np.sqrt(np.stack([_colour_histogram(g[0]) for g in gallery]))
    q_feat = np.sqrt(np.stack([_colour_histogram(q[0]) for q in eligible]))
    similarity = q_feat @ g_feat.T
    same_hits, cross_hits = 0, 0
    for row, (_, pid, cam) in zip(similarity, eligible, strict=True):
        same = g_cam == cam
        same_hits += int(g_pid[same][np.argmax(row[same])] == pid)
        cross_hits += int(g_pid[~same][np.argmax(row[~same])] == pid)
    n = len(eligible)
    return {
        "same_camera_rank1": same_hits / n,
        "cross_camera_rank1": cross_hits / n,
        "n_queries": n,
    }


__all__ = [
    "ATTRIBUTE_COLUMNS",
    "SyntheticSpec",
    "camera_bias_diagnostic",
    "caption_for",
    "synthesize",
]
