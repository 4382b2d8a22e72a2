"""Drawing a person into a label map (at 2x resolution): pose, body, limbs, occluders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ccafl.data.synthetic.identities import Identity
from ccafl.data.synthetic.vocabulary import (
    BAG,
    BELT,
    BG,
    COLLAR,
    HAIR,
    HAT,
    LOGO,
    LOWER,
    OCCLUDER,
    SHOES,
    SKIN,
    STRAP,
    UPPER,
)

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
