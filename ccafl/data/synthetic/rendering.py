"""Colouring a label map, the camera transform, and the caption of what is visible."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ccafl.data.synthetic.cameras import CameraModel, _margin
from ccafl.data.synthetic.drawing import Occluder, Pose, _Body, draw_person
from ccafl.data.synthetic.identities import Identity
from ccafl.data.synthetic.spec import SyntheticSpec
from ccafl.data.synthetic.vocabulary import (
    ATTRIBUTE_CHOICES,
    BAG,
    BG,
    HAIR,
    IS_PERSON,
    LOGO,
    LOWER,
    N_LABELS,
    OCCLUDER,
    SHOES,
    SKIN,
    UPPER,
    VISIBLE_PIXELS,
    _pick,
)

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
