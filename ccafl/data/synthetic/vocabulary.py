"""The attribute vocabulary (name -> RGB, with sampling weights), label codes of the drawn
label map, and the seeded random streams every part draws from."""

from __future__ import annotations

import re
import zlib

import numpy as np

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
