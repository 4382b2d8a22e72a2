"""Stage 2 is intra-camera: per-camera batches, and losses that only compare an image with its
own camera's memories and text candidates (Eq. 7-9).

The locality test does not assume how batches are drawn: it identifies the images behind every
row a loss receives (by matching the rows to the step's model outputs) and checks that the
memory or text candidates passed with them are exactly their camera's. A batch mixing cameras
is fine for it as long as each camera's images meet only their own camera's memories.
"""

from __future__ import annotations

import pytest
import torch
from conftest import RecordingBatches, tiny_config

import ccafl.training.intra as intra
from ccafl.settings import Settings
from ccafl.training.state import TrainingState


class Stage2Spy:
    """Records the batches, the model outputs and what every stage-2 loss receives."""

    def __init__(self, check_single_camera: bool) -> None:
        self.check_single_camera = check_single_camera
        self.index: torch.Tensor | None = None  # image indices of the current batch
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # (f, p) of the batch
        self.memories = None
        self.data = None
        self.calls = {"centroid": 0, "instance": 0, "text": 0}
        self.n_batches = 0
        self.mixed_batches = 0

    def install(self, patch: pytest.MonkeyPatch) -> None:
        real_loader, real_create = intra.epoch_loader, TrainingState.create
        real_from_features = intra.IntraCameraMemories.from_features
        spy = self

        def loader(state, data, labels, epoch, *args, **kwargs):
            spy.data = data
            batches = real_loader(state, data, labels, epoch, *args, **kwargs)

            def on_batch(images, index) -> None:
                spy.index, spy.n_batches = index.clone(), spy.n_batches + 1
                cameras = set(data.cameras[index.numpy()].tolist())
                spy.mixed_batches += len(cameras) > 1
                if spy.check_single_camera:
                    assert len(cameras) == 1, (
                        f"stage 2 drew a batch mixing cameras {sorted(cameras)}: "
                        "per-camera PK sampling (train.intra_batches: camera) is broken"
                    )

            return RecordingBatches(batches, on_batch)

        def create(*args, **kwargs):
            state = real_create(*args, **kwargs)
            state.module.register_forward_hook(spy.record_outputs)
            return state

        def from_features(features, cameras, intra_ids):
            spy.memories = real_from_features(features, cameras, intra_ids)
            return spy.memories

        patch.setattr(intra, "epoch_loader", loader)
        patch.setattr(TrainingState, "create", create)
        patch.setattr(intra.IntraCameraMemories, "from_features", staticmethod(from_features))
        patch.setattr(intra, "centroid_contrastive_loss", self.wrap(self.centroid, "centroid"))
        patch.setattr(intra, "hard_instance_loss", self.wrap(self.instance, "instance"))
        patch.setattr(intra, "image_text_cross_entropy", self.wrap(self.text, "text"))

    def record_outputs(self, module, inputs, outputs) -> None:
        if module.training:  # the batch forward, not the feature extraction
            self.outputs = tuple(o.detach().float() for o in outputs)

    def wrap(self, check, kind: str):
        real = getattr(
            intra,
            {
                "centroid": "centroid_contrastive_loss",
                "instance": "hard_instance_loss",
                "text": "image_text_cross_entropy",
            }[kind],
        )

        def spied(*args, **kwargs):
            check(*args, **kwargs)  # before the loss: a wrong call fails here, not in a crash
            self.calls[kind] += 1
            return real(*args, **kwargs)

        return spied

    def images_of(self, rows: torch.Tensor, which: int) -> torch.Tensor:
        """Dataset index of the image behind each row (rows are outputs of this step)."""
        outputs = self.outputs[which]
        same = (rows.detach().float()[:, None, :] == outputs[None, :, :]).all(dim=2)
        assert bool(same.any(dim=1).all()), "a stage-2 loss got rows that are no image's output"
        return self.index[same.float().argmax(dim=1)]

    def camera_of(self, images: torch.Tensor, loss: str) -> int:
        cameras = sorted(set(self.data.cameras[images.numpy()].tolist()))
        assert len(cameras) == 1, (
            f"stage 2's {loss} compared images of cameras {cameras} in one call: an image "
            "meets another camera's memory or text candidates"
        )
        return cameras[0]

    def centroid(self, feats, centroids, targets, *args, **kwargs) -> None:
        images = self.images_of(feats, 0)
        camera = self.camera_of(images, "L_intra1 (Eq. 7)")
        own = self.memories.centroid_memory(camera)
        assert centroids.shape == own.shape and torch.equal(centroids, own), (
            f"L_intra1 (Eq. 7) scores camera {camera}'s images against a memory that is not "
            f"camera {camera}'s centroid memory"
        )
        intra_ids = torch.as_tensor(self.data.train["intra_id"].to_numpy())[images]
        assert torch.equal(targets.cpu(), intra_ids), "L_intra1 targets are not the intra ids"

    def instance(self, feats, bank, bank_labels, targets, *args, **kwargs) -> None:
        images = self.images_of(feats, 0)
        camera = self.camera_of(images, "L_intra2 (Eq. 8)")
        own_bank, own_labels = self.memories.instance_memory(camera)
        assert bank.shape == own_bank.shape and torch.equal(bank, own_bank), (
            f"L_intra2 (Eq. 8) mines camera {camera}'s images against an instance memory that "
            f"is not camera {camera}'s"
        )
        assert torch.equal(bank_labels, own_labels)

    def text(self, proj, candidates, targets, *args, **kwargs) -> None:
        images = self.images_of(proj, 1)
        camera = self.camera_of(images, "L_i2tce_intra (Eq. 9)")
        gids = torch.as_tensor(self.data.gids)
        own_gids = torch.unique(gids[torch.as_tensor(self.data.cameras) == camera])
        own_text = self.data.text_features[own_gids]
        assert candidates.shape == own_text.shape and torch.equal(candidates.cpu(), own_text), (
            f"L_i2tce_intra (Eq. 9) gives camera {camera}'s images text candidates that are not "
            f"exactly the text features of camera {camera}'s gids"
        )
        own_rows = own_text[targets.cpu()]
        assert torch.equal(own_rows, self.data.text_features[gids[images]]), (
            "L_i2tce_intra targets do not point at each image's own gid"
        )


def run_stage2(tiny_dataset: dict, intra_run: dict, tmp_path, spy: Stage2Spy, batches: str):
    config = tiny_config(
        tiny_dataset["root"], train={"iters_per_epoch": 6, "intra_batches": batches}
    )
    with pytest.MonkeyPatch.context() as patch:
        spy.install(patch)
        intra.run_intra(
            Settings.from_config(config), intra_run["data"], tiny_dataset["clip"], tmp_path
        )
    assert spy.n_batches == 12


def test_every_stage2_batch_holds_one_camera(tiny_dataset, intra_run, tmp_path) -> None:
    """train.intra_batches: camera (the default) draws every batch from one camera."""
    spy = Stage2Spy(check_single_camera=True)
    run_stage2(tiny_dataset, intra_run, tmp_path, spy, "camera")


@pytest.mark.parametrize("batches", ["camera", "mixed"])
def test_stage2_losses_compare_images_only_with_their_own_camera(
    tiny_dataset, intra_run, tmp_path, batches: str
) -> None:
    """Whatever the batches hold, each image meets only its own camera's memories and texts."""
    spy = Stage2Spy(check_single_camera=False)
    run_stage2(tiny_dataset, intra_run, tmp_path, spy, batches)
    assert spy.calls["centroid"] >= 12 and spy.calls["instance"] >= 12 and spy.calls["text"] >= 12
    assert len(set(spy.data.cameras.tolist())) >= 3  # several cameras took part
    if batches == "mixed":  # guards the test: per-camera splitting of a batch was exercised
        assert spy.mixed_batches > 0, "train.intra_batches: mixed drew no batch mixing cameras"
