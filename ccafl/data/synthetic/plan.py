"""The dataset plan: which image of whom, in which camera, in which split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccafl.data.synthetic.cameras import WEB_CAMERA, CameraModel, sample_web_camera
from ccafl.data.synthetic.identities import Identity, sample_identities
from ccafl.data.synthetic.rendering import (
    Frame,
    Renderer,
    _article,
    sample_frame,
    visible_attributes,
    web_caption,
)
from ccafl.data.synthetic.spec import SyntheticSpec
from ccafl.data.synthetic.vocabulary import ATTRIBUTE_COLUMNS, VIEWS, _rng

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
