"""Feature memories of CCAFL: intra-camera hybrid memories (Eq. 4-6) and inter-camera
prototypes (Eq. 13).

Every memory is an ``nn.Module`` whose state lives in registered buffers, so a checkpoint saves
and restores it with ``state_dict()`` / ``load_state_dict()`` and ``.to(device)`` moves it.
Rows are kept L2-normalised: the losses compare features by cosine similarity. Updates run
under ``torch.no_grad()`` and never build a graph.

Momentum convention (Eq. 6 and Eq. 13). The paper writes
``mu <- alpha * mu + (1 - alpha) * batch_mean`` and sets the "momentum updating factor" alpha
to 0.1. We read the equation literally: alpha = ``momentum`` = 0.1 is the weight of the *old*
memory row and the new batch statistic gets 0.9. This is also the convention of the memory
banks this family of methods builds on (ClusterContrast's cluster memory applies
``momentum * old + (1 - momentum) * new`` with momentum 0.1), so the paper's number means the
same thing there and here. Because every update is followed by re-normalisation, a row is a
fast-moving (mostly current) estimate, which suits the per-iteration updates of Eq. 5's
instance memory as well.

Distributed training: ``update`` works on the tensors it is given. Under DDP the caller gathers
the batch's features, labels and image indices from all ranks first (``all_gather``) and
passes the gathered tensors, so every rank applies the same update and the memories stay
identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CameraMemory", "IntraCameraMemories", "PrototypeMemory"]


def _as_tensor(values: Tensor | object, dtype: torch.dtype) -> Tensor:
    if isinstance(values, Tensor):
        return values.to(dtype)
    return torch.as_tensor(values, dtype=dtype)


def class_mean_features(features: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """L2-normalised mean of the L2-normalised features of each class (paper Eq. 4).

    Args:
        features: (N, D) features.
        labels: (N,) class index in ``0..n_classes-1``; rows with a negative label are ignored.
        n_classes: number of rows of the result.

    Returns:
        (n_classes, D). A class without features gets a zero row.
    """
    features = F.normalize(features.to(torch.float32), dim=1)
    labels = labels.to(torch.long)
    keep = labels >= 0
    features, labels = features[keep], labels[keep]
    sums = features.new_zeros((n_classes, features.shape[1]))
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).to(features.dtype)
    return F.normalize(sums / counts.unsqueeze(1), dim=1)


def momentum_update_rows(memory: Tensor, feats: Tensor, labels: Tensor, momentum: float) -> Tensor:
    """In place ``memory[k] <- momentum * memory[k] + (1 - momentum) * batch_mean_k``, then
    L2-normalise the updated rows (paper Eq. 6 / Eq. 13).

    ``batch_mean_k`` is the mean of the L2-normalised features in ``feats`` whose label is k;
    only rows whose label occurs in the batch change. Returns the sorted labels updated.
    """
    labels = labels.to(device=memory.device, dtype=torch.long)
    feats = F.normalize(feats.detach().to(device=memory.device, dtype=memory.dtype), dim=1)
    present, inverse = torch.unique(labels, return_inverse=True)
    sums = feats.new_zeros((present.numel(), feats.shape[1]))
    sums.index_add_(0, inverse, feats)
    counts = torch.bincount(inverse, minlength=present.numel()).to(feats.dtype)
    batch_mean = sums / counts.unsqueeze(1)
    updated = momentum * memory[present] + (1.0 - momentum) * batch_mean
    memory[present] = F.normalize(updated, dim=1)
    return present


class CameraMemory(nn.Module):
    """Intra-camera hybrid memory of one camera c (paper Eq. 4-6).

    Buffers:
        ``centroids`` (N_c, D): centroid memory mu_c, one row per intra-camera ID (Eq. 4, 6).
        ``instances`` (n_c, D): instance memory M^intra, one row (slot) per training image of
            camera c (Eq. 5).
        ``instance_labels`` (n_c,): intra-camera ID of each slot.

    The slot of an image is its position among camera c's training images; the mapping from
    dataset image index to (camera, slot) is kept by :class:`IntraCameraMemories`.
    """

    centroids: Tensor
    instances: Tensor
    instance_labels: Tensor

    def __init__(self, n_ids: int, n_instances: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(n_ids, dim))
        self.register_buffer("instances", torch.zeros(n_instances, dim))
        self.register_buffer("instance_labels", torch.zeros(n_instances, dtype=torch.long))

    @property
    def n_ids(self) -> int:
        return self.centroids.shape[0]

    @torch.no_grad()
    def init(self, features: Tensor, intra_ids: Tensor) -> None:
        """Fill the memory from the features of all of camera c's images (Eq. 4 and Eq. 5).

        Args:
            features: (n_c, D) features f(x) of camera c's training images, in slot order.
            intra_ids: (n_c,) their intra-camera IDs, in ``0..N_c-1``.

        Centroid memory: mu_c^i = mean of ID i's (L2-normalised) features, re-normalised
        (Eq. 4). Instance memory: every instance feature, L2-normalised (Eq. 5 at time 0).
        """
        intra_ids = _as_tensor(intra_ids, torch.long).to(self.instances.device)
        features = features.detach().to(self.instances.device)
        if features.shape != self.instances.shape:
            raise ValueError(
                f"expected features of shape {tuple(self.instances.shape)}, "
                f"got {tuple(features.shape)}"
            )
        self.instances.copy_(F.normalize(features.to(self.instances.dtype), dim=1))
        self.instance_labels.copy_(intra_ids)
        self.centroids.copy_(class_mean_features(features, intra_ids, self.n_ids))

    @torch.no_grad()
    def update(
        self,
        feats: Tensor,
        intra_ids: Tensor,
        image_slots: Tensor,
        momentum: float = 0.1,
    ) -> None:
        """Per-iteration update with a batch of camera c's images (Eq. 5 and Eq. 6).

        Args:
            feats: (b, D) current features of the batch images of camera c.
            intra_ids: (b,) their intra-camera IDs.
            image_slots: (b,) their instance-memory slots.
            momentum: alpha of Eq. 6, the weight of the old centroid (paper: 0.1; see the
                module docstring for the reading).

        Eq. 5: ``instances[slot] <- normalise(f(x))`` (overwrite by the current feature).
        Eq. 6: ``mu_c^i <- alpha * mu_c^i + (1 - alpha) * batch_mean_i`` for every ID i in the
        batch, batch_mean_i the mean of the batch's normalised features of ID i; the updated
        rows are re-normalised.
        """
        slots = image_slots.to(device=self.instances.device, dtype=torch.long)
        self.instances[slots] = F.normalize(
            feats.detach().to(device=self.instances.device, dtype=self.instances.dtype), dim=1
        )
        momentum_update_rows(self.centroids, feats, intra_ids, momentum)

    def centroid_memory(self) -> Tensor:
        """(N_c, D) centroid memory mu_c, the ``centroids`` argument of Eq. 7's loss."""
        return self.centroids

    def instance_memory(self) -> tuple[Tensor, Tensor]:
        """(instance bank (n_c, D), instance labels (n_c,)), the arguments of Eq. 8's loss."""
        return self.instances, self.instance_labels


class IntraCameraMemories(nn.Module):
    """One :class:`CameraMemory` per camera, indexed by dataset image index.

    Built from the per-image ``cameras`` and ``intra_ids`` of the training split (the columns of
    ``ics/train.parquet``, in row order); row i of that table is dataset image index i.
    Constructing from the labels alone allocates the right buffer shapes, so a checkpoint's
    ``state_dict`` can be loaded into a fresh object; :meth:`init` or :meth:`from_features`
    fills it from features.

    Buffers: ``camera_of_image`` (N,) and ``slot_of_image`` (N,): where image i lives.
    """

    camera_of_image: Tensor
    slot_of_image: Tensor

    def __init__(self, cameras: Tensor, intra_ids: Tensor, dim: int) -> None:
        super().__init__()
        cameras = _as_tensor(cameras, torch.long)
        intra_ids = _as_tensor(intra_ids, torch.long)
        if cameras.shape != intra_ids.shape or cameras.dim() != 1:
            raise ValueError("cameras and intra_ids must be 1-D and of equal length")
        n_cameras = int(cameras.max()) + 1
        slot_of_image = torch.empty_like(cameras)
        memories = []
        for camera in range(n_cameras):
            members = torch.nonzero(cameras == camera).flatten()
            slot_of_image[members] = torch.arange(members.numel())
            n_ids = int(intra_ids[members].max()) + 1 if members.numel() else 0
            memory = CameraMemory(n_ids, members.numel(), dim)
            memory.instance_labels.copy_(intra_ids[members])
            memories.append(memory)
        self.camera_memories = nn.ModuleList(memories)
        self.register_buffer("camera_of_image", cameras.clone())
        self.register_buffer("slot_of_image", slot_of_image)

    @classmethod
    def from_features(
        cls, features: Tensor, cameras: Tensor, intra_ids: Tensor
    ) -> IntraCameraMemories:
        """Build and fill the memories from (N, D) features of all training images."""
        memories = cls(cameras, intra_ids, features.shape[1]).to(features.device)
        memories.init(features)
        return memories

    def __len__(self) -> int:
        return len(self.camera_memories)

    def __getitem__(self, camera: int) -> CameraMemory:
        return self.camera_memories[camera]  # type: ignore[return-value]

    @torch.no_grad()
    def init(self, features: Tensor) -> None:
        """Fill every camera's centroid and instance memory (Eq. 4, 5) from (N, D) features."""
        for camera, memory in enumerate(self.camera_memories):
            members = torch.nonzero(self.camera_of_image == camera).flatten()
            memory.init(features[members.to(features.device)], memory.instance_labels)

    @torch.no_grad()
    def update(
        self,
        feats: Tensor,
        cameras: Tensor,
        intra_ids: Tensor,
        image_indices: Tensor,
        momentum: float = 0.1,
    ) -> None:
        """Apply Eq. 5 and Eq. 6 for a batch that may mix cameras.

        Args:
            feats: (B, D) current features of the batch.
            cameras: (B,) camera of each image.
            intra_ids: (B,) intra-camera ID of each image.
            image_indices: (B,) dataset image index of each image (row of train.parquet).
            momentum: alpha of Eq. 6 (paper: 0.1, weight of the old centroid).
        """
        device = self.camera_of_image.device
        cameras = cameras.to(device=device, dtype=torch.long)
        image_indices = image_indices.to(device=device, dtype=torch.long)
        if not bool((self.camera_of_image[image_indices] == cameras).all()):
            raise ValueError("image_indices do not match the cameras they were built with")
        slots = self.slot_of_image[image_indices]
        for camera in torch.unique(cameras).tolist():
            in_camera = cameras == camera
            self.camera_memories[camera].update(
                feats[in_camera.to(feats.device)],
                intra_ids.to(device)[in_camera],
                slots[in_camera],
                momentum,
            )

    def centroid_memory(self, camera: int) -> Tensor:
        """(N_c, D) centroid memory of ``camera`` (Eq. 7)."""
        return self[camera].centroid_memory()

    def instance_memory(self, camera: int) -> tuple[Tensor, Tensor]:
        """(instance bank, instance labels) of ``camera`` (Eq. 8)."""
        return self[camera].instance_memory()


class PrototypeMemory(nn.Module):
    """Inter-camera memory: one prototype per pseudo-label (paper Eq. 13).

    Rebuilt after every association step (the number of pseudo-labels Z changes per epoch).
    Buffer ``prototypes`` (Z, D), L2-normalised rows.
    """

    prototypes: Tensor

    def __init__(self, n_labels: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(n_labels, dim))

    @property
    def n_labels(self) -> int:
        return self.prototypes.shape[0]

    @classmethod
    def from_features(cls, features: Tensor, pseudo_labels: Tensor) -> PrototypeMemory:
        """Build and fill from (N, D) image features and their (N,) pseudo-labels."""
        pseudo_labels = _as_tensor(pseudo_labels, torch.long)
        memory = cls(int(pseudo_labels.max()) + 1, features.shape[1]).to(features.device)
        memory.init(features, pseudo_labels)
        return memory

    @torch.no_grad()
    def init(self, features: Tensor, pseudo_labels: Tensor) -> None:
        """Prototype z = normalised mean of the normalised features of the images labelled z.

        Images with a negative pseudo-label are ignored.
        """
        pseudo_labels = _as_tensor(pseudo_labels, torch.long).to(features.device)
        self.prototypes.copy_(
            class_mean_features(features.detach(), pseudo_labels, self.n_labels).to(
                self.prototypes.device
            )
        )

    @torch.no_grad()
    def update(self, feats: Tensor, pseudo_labels: Tensor, momentum: float = 0.1) -> None:
        """Momentum update ``M[y] <- alpha * M[y] + (1 - alpha) * f`` (Eq. 13), re-normalised.

        Same rule as Eq. 6: f is the batch mean of the normalised features of pseudo-label y,
        so the result does not depend on the order of images within the batch; alpha =
        ``momentum`` weights the old prototype (paper: 0.1). Negative labels are skipped.
        """
        pseudo_labels = pseudo_labels.to(feats.device)
        keep = pseudo_labels >= 0
        if bool(keep.any()):
            momentum_update_rows(self.prototypes, feats[keep], pseudo_labels[keep], momentum)

    def prototype_memory(self) -> Tensor:
        """(Z, D) prototypes, the ``prototypes`` argument of Eq. 14's loss."""
        return self.prototypes
