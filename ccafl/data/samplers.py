"""PK batch sampling: P identities x K images, optionally all identities from one camera.

Stage 2 draws identities within one camera (its memories and text candidates are per camera);
stage 3 draws over pseudo-labels. Batches depend only on (seed, epoch), so a resumed epoch
draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class PKBatchSampler:
    def __init__(
        self,
        labels: np.ndarray,
        P: int,
        K: int,
        n_batches: int,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        """``labels[i]``: identity of image i (negative: never drawn); ``groups[i]``: its camera
        when drawing per camera.

        Identities with fewer than K images are drawn with replacement. A group with fewer
        than P identities gives a smaller batch rather than mixing cameras.
        """
        self.labels = np.asarray(labels)
        self.P, self.K, self.n_batches = P, K, n_batches
        self.rng = np.random.default_rng([seed, epoch])
        order = np.argsort(self.labels, kind="stable")
        order = order[self.labels[order] >= 0]  # a negative label: not trained this epoch
        ids, starts = np.unique(self.labels[order], return_index=True)
        self.members = dict(zip(ids.tolist(), np.split(order, starts[1:]), strict=True))
        if groups is None:
            self.group_ids = {0: ids}
        else:
            groups = np.asarray(groups)
            id_group = {int(label): int(groups[idx[0]]) for label, idx in self.members.items()}
            self.group_ids = {}
            for label, group in id_group.items():
                self.group_ids.setdefault(group, []).append(label)
            self.group_ids = {g: np.array(v) for g, v in self.group_ids.items() if len(v) >= 2}
            if not self.group_ids:
                raise ValueError("no camera has two or more identities: nothing to contrast")
        names = sorted(self.group_ids)
        weights = np.array([len(self.group_ids[g]) for g in names], dtype=float)
        self.group_names, self.group_weights = names, weights / weights.sum()

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.n_batches):
            group = self.group_names[self.rng.choice(len(self.group_names), p=self.group_weights)]
            candidates = self.group_ids[group]
            chosen = self.rng.choice(candidates, size=min(self.P, len(candidates)), replace=False)
            batch: list[int] = []
            for label in chosen:
                members = self.members[int(label)]
                picks = self.rng.choice(members, size=self.K, replace=len(members) < self.K)
                batch.extend(int(i) for i in picks)
            yield batch
