"""Tiny copies of the DG protocols' datasets in their real folder layouts and file namings
(`ccafl.data.dg_datasets`), with 16x8 random images, for loader tests and protocol e2e runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_image
from scipy.io import savemat


def _images(root: Path, names: list[str], seed: int) -> None:
    for i, name in enumerate(names):
        write_image(root / name, seed + i)


def build_cuhk03np(root: Path, n_train: int = 4, n_test: int = 3) -> Path:
    """labeled/ and detected/, each Market-style: 2 cameras, 2 images per person and camera."""
    for offset, layout in enumerate(("labeled", "detected")):
        names = []
        for pid in range(1, n_train + 1):
            names += [
                f"{layout}/bounding_box_train/{pid:04d}_c{c}_{k}.png"
                for c in (1, 2)
                for k in (1, 2)
            ]
        for pid in range(n_train + 1, n_train + n_test + 1):
            names.append(f"{layout}/query/{pid:04d}_c1_1.png")
            names += [f"{layout}/bounding_box_test/{pid:04d}_c2_{k}.png" for k in (1, 2)]
        _images(root, names, 1000 * offset)
    return root


def build_cuhk02(root: Path, per_pair: int = 3) -> Path:
    """P1 .. P5, each with cam1/ and cam2/; person numbers restart in every pair."""
    names = []
    for pair in range(1, 6):
        for person in range(1, per_pair + 1):
            names += [f"P{pair}/cam{c}/{person:04d}_{c}{k}.png" for c in (1, 2) for k in (1, 2)]
    _images(root, names, 2000)
    return root


def build_cuhksysu(root: Path, n: int = 5) -> Path:
    names = [f"cropped_images/p{pid}_s{3 * pid + k}.jpg" for pid in range(1, n + 1) for k in (0, 1)]
    _images(root, names, 3000)
    return root


def build_prid(root: Path, paired: int = 8, extra_a: int = 2, extra_b: int = 3) -> Path:
    """single_shot/cam_a and cam_b: persons 1..paired in both, then unpaired persons from 201
    (in PRID these are different people in each camera)."""
    names = [
        f"single_shot/cam_{c}/person_{pid:04d}.png" for c in "ab" for pid in range(1, paired + 1)
    ]
    names += [f"single_shot/cam_a/person_{pid:04d}.png" for pid in range(201, 201 + extra_a)]
    names += [f"single_shot/cam_b/person_{pid:04d}.png" for pid in range(201, 201 + extra_b)]
    _images(root, names, 4000)
    return root


def build_viper(root: Path, n: int = 8) -> Path:
    names = [f"cam_a/{i:03d}_45.bmp" for i in range(n)] + [
        f"cam_b/{i:03d}_90.bmp" for i in range(n)
    ]
    _images(root, names, 5000)
    return root


def build_ilids(root: Path, n: int = 8) -> Path:
    """Persons/<pid:4><n:3>.jpg, two to four images per person."""
    names = [
        f"Persons/{pid:04d}{k:03d}.jpg"
        for pid in range(1, n + 1)
        for k in range(1, 2 + pid % 3 + 1)
    ]
    _images(root, names, 6000)
    return root


def write_grid_partitions(path: Path, partitions: list[list[int]]) -> None:
    """features_and_partitions.mat with GRID's trainIdxAll: a 1 x splits cell of structs whose
    third field holds the split's training persons."""
    record = np.dtype([("idx_test", "O"), ("idx_probe", "O"), ("idx_train", "O")])
    cells = np.empty((1, len(partitions)), dtype=object)
    for k, train in enumerate(partitions):
        struct = np.zeros((1, 1), dtype=record)
        struct[0, 0]["idx_test"] = np.zeros((1, 1))
        struct[0, 0]["idx_probe"] = np.zeros((1, 1))
        struct[0, 0]["idx_train"] = np.asarray([train], dtype=np.float64)
        cells[0, k] = struct
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"trainIdxAll": cells})


def build_grid(root: Path, n: int = 8, distractors: int = 3) -> Path:
    """underground_reid/: probe/ and gallery/ (persons 1..n in 8 cameras, person 0 = gallery
    distractors) and ten partitions of n // 2 training persons each."""
    names = [
        f"underground_reid/probe/{pid:04d}_{1 + pid % 4}_2500{pid}_1_2_3_4.jpeg"
        for pid in range(1, n + 1)
    ]
    names += [
        f"underground_reid/gallery/{pid:04d}_{5 + pid % 4}_2600{pid}_1_2_3_4.jpeg"
        for pid in range(1, n + 1)
    ]
    names += [
        f"underground_reid/gallery/0000_{1 + k}_2700{k}_1_2_3_4.jpeg" for k in range(distractors)
    ]
    _images(root, names, 7000)
    rng = np.random.default_rng(0)
    partitions = [
        sorted(rng.choice(np.arange(1, n + 1), n // 2, replace=False).tolist()) for _ in range(10)
    ]
    write_grid_partitions(root / "underground_reid" / "features_and_partitions.mat", partitions)
    return root


BUILDERS = {
    "cuhk03np": build_cuhk03np,
    "cuhk02": build_cuhk02,
    "cuhksysu": build_cuhksysu,
    "prid": build_prid,
    "grid": build_grid,
    "viper": build_viper,
    "ilids": build_ilids,
}
