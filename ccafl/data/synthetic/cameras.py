"""Cameras: each with its own photometric and geometric signature, and the web camera of the
pretraining photos."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ccafl.data.synthetic.spec import SyntheticSpec
from ccafl.data.synthetic.vocabulary import _rng

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


@dataclass(frozen=True)
class DomainLook:
    """What every camera of one world shares (a dataset's look in the DG mode): a colour cast,
    a brightness and contrast, a background hue family and a sensor quality.

    Drawn from its own random stream, so a world's cameras are the same draws with or
    without it; ``strength`` 0 (the default) leaves every camera exactly as it was.
    """

    strength: float
    gains: np.ndarray  # (3,)
    global_gain: float
    gamma: float
    saturation: float
    hue: float  # the hue the cameras' backgrounds are pulled towards
    blur: float
    noise: float

    @classmethod
    def sample(cls, spec: SyntheticSpec) -> DomainLook:
        rng = _rng(spec.seed, "domain")
        d = float(spec.domain_shift)
        warm, tint = rng.uniform(-1, 1), rng.uniform(-1, 1)
        return cls(
            strength=d,
            gains=(1 + d * np.array([0.25 * warm, 0.12 * tint, -0.25 * warm])).astype(np.float32),
            global_gain=math.exp(d * rng.uniform(-0.35, 0.35)),
            gamma=math.exp(d * rng.uniform(-0.3, 0.3)),
            saturation=max(0.0, 1 + d * float(rng.uniform(-0.5, 0.3))),
            hue=float(rng.uniform()),
            blur=d * float(rng.uniform(0.0, 0.6)),
            noise=d * float(rng.uniform(0.0, 5.0)),
        )

    def apply(self, camera: CameraModel, bg_shape: tuple[int, int], seed: int) -> CameraModel:
        """The camera seen through this look: its background's hue pulled towards the
        domain's, its sensor shifted by the domain's cast and quality."""
        if not self.strength:
            return camera
        mix = min(self.strength, 1.0)
        crng = _rng(seed, "domain-background", camera.index)
        domain_bg = _camera_background(crng, bg_shape, self.hue, int(crng.integers(4)))
        background = (1 - 0.6 * mix) * camera.background + 0.6 * mix * domain_bg
        return dataclasses.replace(
            camera,
            gains=np.maximum(camera.gains * self.gains, 0.2).astype(np.float32),
            global_gain=camera.global_gain * self.global_gain,
            gamma=camera.gamma * self.gamma,
            saturation=camera.saturation * self.saturation,
            background=np.clip(background, 0, 255).astype(np.float32),
            blur=camera.blur + self.blur,
            noise=camera.noise + self.noise,
        )


def sample_cameras(spec: SyntheticSpec) -> list[CameraModel]:
    """Cameras with well-spread signatures (temperatures, hues, views are spaced, then shuffled),
    seen through the world's `DomainLook` when ``spec.domain_shift`` is set.

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
    look = DomainLook.sample(spec)
    return [look.apply(camera, bg_shape, spec.seed) for camera in cameras]


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
