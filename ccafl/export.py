"""Export the image encoder with its retrieval head for serving without this package.

The exported graph is :class:`RetrievalHead`: images (N x 3 x H x W, normalised with the CLIP
mean and std as in ccafl.data.transforms, at the model's own H x W) in, L2-normalised retrieval
features ``f`` out, i.e. exactly the vectors ``ccafl embed`` writes and ``ccafl index``
searches. The batch size is free; H x W are fixed, because the positional embedding of the
attention pool is tied to the input grid.

* TorchScript: ``torch.jit.trace`` (``torch.jit.script`` cannot compile ReIDEncoder's forward,
  which branches on the tower type in Python). Load with ``torch.jit.load``.
* ONNX: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17), a
  dynamic batch axis; checked with onnxruntime. The newer dynamo exporter needs onnxscript and
  is not used. Needs the optional ``onnx`` extra (``pip install 'ccafl[onnx]'``).

:func:`parity` gives the max abs difference between exported and eager features; the tests
check it on the tiny CLIP architecture (tests/test_export.py).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccafl.io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "ONNX_OPSET",
    "RetrievalHead",
    "export_onnx",
    "export_torchscript",
    "onnx_features",
    "parity",
]

ONNX_OPSET = 17


class RetrievalHead(nn.Module):
    """``images -> normalize(f)``: the ReID encoder's retrieval feature, as searched."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> Tensor:
        f, _ = self.encoder(images)
        return F.normalize(f.float(), dim=1)


def example_images(model: nn.Module, batch: int = 2, seed: int = 0) -> Tensor:
    """A random batch at the model's input size (what tracing and parity checks feed)."""
    height, width = (int(v) for v in model.visual.image_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Trace ``RetrievalHead(model)`` on CPU and save it atomically."""
    head = RetrievalHead(model).cpu().eval()
    with torch.no_grad():
        traced = torch.jit.trace(head, example_images(model), check_trace=True)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return Path(path)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            f"ONNX export needs the optional onnx extra ({error.name} is missing): "
            "pip install 'ccafl[onnx]'"
        ) from error


def export_onnx(model: nn.Module, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Export ``RetrievalHead(model)`` to ONNX with a dynamic batch axis; checked by onnx."""
    _require_onnx()
    import onnx

    head = RetrievalHead(model).cpu().eval()
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            head,
            (example_images(model),),
            str(tmp),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        onnx.checker.check_model(str(tmp))
    return Path(path)


def onnx_features(path: str | Path, images: Tensor) -> np.ndarray:
    """Run an exported ONNX file with onnxruntime on CPU."""
    _require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


def parity(model: nn.Module, exported: np.ndarray | Tensor, images: Tensor) -> float:
    """Max abs difference between exported features and eager ``RetrievalHead`` features."""
    with torch.no_grad():
        eager = RetrievalHead(model).cpu().eval()(images).numpy()
    exported = exported.detach().cpu().numpy() if isinstance(exported, Tensor) else exported
    if exported.shape != eager.shape:
        raise ValueError(f"exported features have shape {exported.shape}, eager {eager.shape}")
    return float(np.abs(exported - eager).max())
