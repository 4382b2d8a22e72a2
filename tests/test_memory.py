"""Update rules and checkpointing of the CCAFL memories (ccafl.memory, paper Eq. 4-6, 13)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from ccafl.losses import centroid_contrastive_loss, hard_instance_loss
from ccafl.memory import CameraMemory, IntraCameraMemories, PrototypeMemory

R = math.sqrt(0.5)  # 0.707107


def camera_memory() -> CameraMemory:
    # Camera with 2 IDs and 3 images: ID 0 -> (1,0), (0,1); ID 1 -> (2,0).
    memory = CameraMemory(n_ids=2, n_instances=3, dim=2)
    memory.init(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 0, 1]))
    return memory


def test_camera_memory_init_eq4_eq5() -> None:
    memory = camera_memory()
    # Eq. 4: mu_0 = mean((1,0), (0,1)) = (0.5, 0.5) -> normalised (0.707107, 0.707107);
    #        mu_1 = (2,0) -> (1, 0).
    torch.testing.assert_close(memory.centroid_memory(), torch.tensor([[R, R], [1.0, 0.0]]))
    # Eq. 5 at time 0: every instance, normalised.
    bank, labels = memory.instance_memory()
    torch.testing.assert_close(bank, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert labels.tolist() == [0, 0, 1]


def test_camera_memory_update_eq5_eq6() -> None:
    memory = camera_memory()
    # Batch: one image of ID 0 in slot 0 with feature (0, 3) -> normalised (0, 1).
    memory.update(torch.tensor([[0.0, 3.0]]), torch.tensor([0]), torch.tensor([0]), momentum=0.1)
    # Eq. 5: slot 0 overwritten by the current (normalised) feature.
    bank, _ = memory.instance_memory()
    torch.testing.assert_close(bank, torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))
    # Eq. 6 with alpha = 0.1 on the OLD centroid:
    # 0.1 * (0.707107, 0.707107) + 0.9 * (0, 1) = (0.070711, 0.970711); norm 0.973283
    # -> (0.072652, 0.997357). ID 1 is not in the batch and keeps (1, 0).
    old = torch.tensor([R, R])
    mixed = 0.1 * old + 0.9 * torch.tensor([0.0, 1.0])
    torch.testing.assert_close(mixed, torch.tensor([0.070711, 0.970711]))
    expected = torch.tensor([[0.072652, 0.997357], [1.0, 0.0]])
    torch.testing.assert_close(memory.centroid_memory(), expected, atol=1e-5, rtol=0)
    assert torch.allclose(memory.centroid_memory().norm(dim=1), torch.ones(2))


def test_camera_memory_update_uses_batch_mean_per_id() -> None:
    memory = camera_memory()
    # Two images of ID 1 in the batch: (0,1) and (-1,0) -> batch mean (-0.5, 0.5).
    # 0.1 * (1, 0) + 0.9 * (-0.5, 0.5) = (-0.35, 0.45); normalised (-0.613941, 0.789352).
    feats = torch.tensor([[0.0, 5.0], [-1.0, 0.0]], requires_grad=True)
    memory.update(feats, torch.tensor([1, 1]), torch.tensor([2, 2]), momentum=0.1)
    expected = torch.tensor([-0.35, 0.45]) / math.hypot(0.35, 0.45)
    torch.testing.assert_close(memory.centroid_memory()[1], expected)
    torch.testing.assert_close(memory.centroid_memory()[0], torch.tensor([R, R]))
    assert not memory.centroids.requires_grad and memory.centroids.grad_fn is None


def test_momentum_one_keeps_memory() -> None:
    memory = camera_memory()
    before = memory.centroid_memory().clone()
    memory.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([2]), momentum=1.0)
    torch.testing.assert_close(memory.centroid_memory(), before)


def labelled_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # 5 training images: cameras [0, 1, 0, 1, 1], intra IDs [0, 0, 1, 1, 0].
    # Camera 0: images 0, 2 -> slots 0, 1; camera 1: images 1, 3, 4 -> slots 0, 1, 2.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 1.0], [0.0, -1.0]])
    return features, torch.tensor([0, 1, 0, 1, 1]), torch.tensor([0, 0, 1, 1, 0])


def test_intra_camera_memories_layout_and_init() -> None:
    features, cameras, intra_ids = labelled_split()
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids)
    assert len(memories) == 2
    assert memories.slot_of_image.tolist() == [0, 0, 1, 1, 2]
    torch.testing.assert_close(memories.centroid_memory(0), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # Camera 1, ID 0: images 1 (0,1) and 4 (0,-1) -> mean (0,0) -> zero row (degenerate, kept 0)
    # ID 1: image 3 (1,1) -> (0.707107, 0.707107)
    torch.testing.assert_close(memories.centroid_memory(1), torch.tensor([[0.0, 0.0], [R, R]]))
    bank, labels = memories.instance_memory(1)
    torch.testing.assert_close(bank, torch.tensor([[0.0, 1.0], [R, R], [0.0, -1.0]]))
    assert labels.tolist() == [0, 1, 0]


def test_intra_camera_memories_update_routes_by_image_index() -> None:
    features, cameras, intra_ids = labelled_split()
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids)
    # Batch: image 2 (camera 0, ID 1, slot 1) and image 4 (camera 1, ID 0, slot 2).
    batch = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    memories.update(batch, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 4]))
    assert memories.instance_memory(0)[0][1].tolist() == [1.0, 0.0]
    assert memories.instance_memory(1)[0][2].tolist() == [1.0, 0.0]
    # camera 0, ID 1: 0.1 * (0,1) + 0.9 * (1,0) -> (0.9, 0.1) / 0.905539
    expected = torch.tensor([0.9, 0.1]) / math.hypot(0.9, 0.1)
    torch.testing.assert_close(memories.centroid_memory(0)[1], expected)
    # camera 1, ID 0: 0.1 * (0,0) + 0.9 * (1,0) -> (1, 0)
    torch.testing.assert_close(memories.centroid_memory(1)[0], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError):
        memories.update(batch[:1], torch.tensor([1]), torch.tensor([1]), torch.tensor([2]))


def test_intra_camera_memories_state_dict_round_trip() -> None:
    features, cameras, intra_ids = labelled_split()
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids)
    memories.update(
        torch.tensor([[0.3, -0.2]]), torch.tensor([1]), torch.tensor([1]), torch.tensor([3])
    )
    buffer = io.BytesIO()
    torch.save(memories.state_dict(), buffer)
    buffer.seek(0)
    restored = IntraCameraMemories(cameras, intra_ids, dim=2)  # shapes from the labels alone
    restored.load_state_dict(torch.load(buffer))
    for name, tensor in memories.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


def test_memories_feed_the_losses() -> None:
    features, cameras, intra_ids = labelled_split()
    memories = IntraCameraMemories.from_features(features, cameras, intra_ids)
    feats = torch.tensor([[1.0, 0.1], [0.1, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    loss = centroid_contrastive_loss(feats, memories.centroid_memory(0), targets)
    loss = loss + hard_instance_loss(feats, *memories.instance_memory(0), targets)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


def test_prototype_memory_init_update_round_trip() -> None:
    # Images with pseudo-labels [0, 0, 1, -1]: -1 (unassociated) is ignored.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [5.0, 5.0]])
    memory = PrototypeMemory.from_features(features, torch.tensor([0, 0, 1, -1]))
    # Eq. 13 init: prototype 0 = normalised mean((1,0), (0,1)) = (0.707107, 0.707107); 1 = (0,1)
    torch.testing.assert_close(memory.prototype_memory(), torch.tensor([[R, R], [0.0, 1.0]]))
    # Eq. 13 update, alpha = 0.1: prototype 1 <- 0.1 (0,1) + 0.9 (1,0) = (0.9, 0.1), normalised.
    memory.update(torch.tensor([[2.0, 0.0], [9.0, 9.0]]), torch.tensor([1, -1]))
    expected = torch.tensor([0.9, 0.1]) / math.hypot(0.9, 0.1)
    torch.testing.assert_close(memory.prototype_memory()[1], expected)
    torch.testing.assert_close(memory.prototype_memory()[0], torch.tensor([R, R]))
    restored = PrototypeMemory(memory.n_labels, 2)
    restored.load_state_dict(memory.state_dict())
    assert torch.equal(restored.prototypes, memory.prototypes)
