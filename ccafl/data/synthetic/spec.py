"""The benchmark's parameters (`SyntheticSpec`), read from the config's `synthetic` section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    # One look shared by all cameras of this world (the DG mode's domains): 0 = none.
    domain_shift: float = 0.0

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
        if self.domain_shift < 0:
            raise ValueError("domain_shift must be >= 0")
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
        """JSON-ready dict (tuples as lists); ``domain_shift`` only when set, so the spec.json
        of a world without a domain look stays as it was before the key existed."""
        out = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
        if not self.domain_shift:
            del out["domain_shift"]
        return out
