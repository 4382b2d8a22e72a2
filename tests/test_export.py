"""Exported image encoder + retrieval head: TorchScript and ONNX give the eager features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ccafl.cli import main
from ccafl.export import (
    RetrievalHead,
    example_images,
    export_onnx,
    export_torchscript,
    onnx_features,
    parity,
)
from ccafl.settings import Settings

#: float32 round-off of the same graph run by another engine; a wrong weight or a missing
#: BN-neck shows up as differences of order 0.1-1 on unit vectors.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    from ccafl.models.factory import build_reid_model

    config = tiny_config(tmp_path_factory.mktemp("x"), clip={"pretrained": None})
    torch.manual_seed(0)
    model = build_reid_model(Settings.from_config(config), weights=False)
    # Non-trivial BN-neck statistics, so the exported head is really exercised.
    model.bottleneck.running_mean.normal_(0, 0.1)
    model.bottleneck.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_torchscript_matches_eager_at_another_batch_size(tiny_model, tmp_path: Path) -> None:
    path = export_torchscript(tiny_model, tmp_path / "m.pt")
    images = example_images(tiny_model, batch=5, seed=3)  # traced at batch 2
    with torch.no_grad():
        exported = torch.jit.load(str(path))(images)
    assert exported.shape == (5, tiny_model.feat_dim)
    assert parity(tiny_model, exported, images) < TOLERANCE
    # The head is what `ccafl embed` writes: normalised BN-neck features.
    with torch.no_grad():
        f, _ = tiny_model(images)
    np.testing.assert_allclose(
        exported.numpy(), torch.nn.functional.normalize(f, dim=1).numpy(), atol=TOLERANCE
    )


def test_onnx_matches_eager(tiny_model, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    path = export_onnx(tiny_model, tmp_path / "m.onnx")
    images = example_images(tiny_model, batch=3, seed=4)
    exported = onnx_features(path, images)
    assert exported.shape == (3, tiny_model.feat_dim)
    assert parity(tiny_model, exported, images) < TOLERANCE


def test_parity_detects_a_different_model(tiny_model) -> None:
    import copy

    images = example_images(tiny_model, batch=2)
    other = copy.deepcopy(tiny_model)
    other.bottleneck.running_mean += 0.5  # e.g. an export that lost the BN-neck statistics
    with torch.no_grad():
        wrong = RetrievalHead(other)(images)
    assert parity(tiny_model, wrong, images) > 100 * TOLERANCE


def test_export_command_writes_both_formats_and_the_parity(tiny_model, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from ccafl.io import save_torch
    from ccafl.models.factory import final_model_payload

    config = tiny_config(tmp_path, clip={"pretrained": None})
    save_torch(
        final_model_payload(tiny_model, Settings.from_config(config), epoch=0),
        tmp_path / "model.pt",
    )
    assert (
        main(["export", "--model", str(tmp_path / "model.pt"), "--out-dir", str(tmp_path / "x")])
        == 0
    )
    report = json.loads((tmp_path / "x" / "export.json").read_text())
    assert report["input_size"] == [64, 32]
    for name, file in (("torchscript", "model.torchscript.pt"), ("onnx", "model.onnx")):
        assert report[name]["file"] == file and (tmp_path / "x" / file).is_file()
        assert report[name]["max_abs_diff"] < TOLERANCE
