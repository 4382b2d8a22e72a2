"""Stage 3 trains on its association (Eq. 12-19): the pseudo-labels written to labels.parquet are
the ones the sampler draws over and the losses use as targets, and on the tiny world they merge
gids across cameras.

Stage 3 with every gid as its own pseudo-label still trains, writes well-formed artifacts and
keeps the association precision in [0, 1]; only these checks tell it apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import RecordingBatches, tiny_config

import ccafl.training.inter as inter
from ccafl.settings import Settings


@pytest.fixture(scope="module")
def spied_epoch(tiny_dataset: dict, intra_run: dict, tmp_path_factory: pytest.TempPathFactory):
    """One stage-3 epoch (with ICAL) in-process, recording what the sampler and losses get."""
    config = tiny_config(tiny_dataset["root"], train={"epochs": 3, "adv_start": 3})
    out = tmp_path_factory.mktemp("stage3") / "epoch_003"
    seen: dict[str, list] = {"batches": [], "sampler": [], "ipcl": [], "i2tce": [], "ical": []}

    def spy_loader(state, data, labels, epoch, *args, **kwargs):
        seen["sampler"].append(np.asarray(labels).copy())
        loader = real_loader(state, data, labels, epoch, *args, **kwargs)
        return RecordingBatches(loader, lambda images, index: seen["batches"].append(index.clone()))

    def spy_ipcl(feats, prototypes, targets, *args, **kwargs):
        seen["ipcl"].append((prototypes.shape[0], targets.detach().cpu().clone()))
        return real_ipcl(feats, prototypes, targets, *args, **kwargs)

    def spy_i2tce(proj, text, targets, *args, **kwargs):
        seen["i2tce"].append((text.shape[0], targets.detach().cpu().clone()))
        return real_i2tce(proj, text, targets, *args, **kwargs)

    def spy_ical(gids, pseudo_labels_of_gids, *args, **kwargs):
        seen["ical"].append(pseudo_labels_of_gids.detach().cpu().clone())
        return real_ical(gids, pseudo_labels_of_gids, *args, **kwargs)

    real_loader, real_ipcl = inter.epoch_loader, inter.prototype_contrastive_loss
    real_i2tce, real_ical = inter.image_text_cross_entropy, inter.ical_targets
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inter, "epoch_loader", spy_loader)
        patch.setattr(inter, "prototype_contrastive_loss", spy_ipcl)
        patch.setattr(inter, "image_text_cross_entropy", spy_i2tce)
        patch.setattr(inter, "ical_targets", spy_ical)
        inter.run_inter_epochs(
            Settings.from_config(config),
            intra_run["data"],
            intra_run["checkpoint"],
            tiny_dataset["clip"],
            [3],
            [out],
        )
    labels = pd.read_parquet(out / "labels.parquet").sort_values("gid")
    return {"seen": seen, "labels": labels, "out": Path(out), "data": intra_run["data"]}


def test_pseudo_labels_merge_gids_across_cameras(spied_epoch: dict) -> None:
    labels = spied_epoch["labels"]
    edges = pd.read_parquet(spied_epoch["out"] / "graph.parquet")
    n_gids, n_clusters = len(labels), labels["cluster"].nunique()
    assert len(edges) > 0, "the tiny world's association found no edge: the test cannot see merges"
    assert n_clusters < n_gids, (
        f"stage 3 ignores its association: {n_gids} gids give {n_clusters} pseudo-labels although "
        f"graph.parquet has {len(edges)} edges (every gid is its own pseudo-label)"
    )
    # Every kept edge joins two gids into one pseudo-label.
    cluster = labels.set_index("gid")["cluster"]
    joined = cluster[edges["src_gid"]].to_numpy() == cluster[edges["dst_gid"]].to_numpy()
    assert joined.all(), "an edge of graph.parquet joins gids that labels.parquet keeps apart"


def test_losses_and_sampler_use_the_association_labels(spied_epoch: dict) -> None:
    seen, data = spied_epoch["seen"], spied_epoch["data"]
    cluster_of_gid = torch.as_tensor(spied_epoch["labels"]["cluster"].to_numpy())
    image_labels = cluster_of_gid[torch.as_tensor(data.gids)]
    n_clusters = int(cluster_of_gid.max()) + 1
    assert seen["batches"] and len(seen["ipcl"]) == len(seen["batches"])

    for index, (n_prototypes, targets) in zip(seen["batches"], seen["ipcl"], strict=True):
        assert n_prototypes == n_clusters, (
            f"L_IPCL scores {n_prototypes} prototypes, but the association made {n_clusters} "
            "pseudo-labels: stage 3 ignores its association"
        )
        assert torch.equal(targets, image_labels[index]), (
            "L_IPCL targets are not the association's pseudo-labels of the batch images "
            "(labels.parquet): stage 3 ignores its association"
        )
    assert len(seen["sampler"]) == 1
    assert np.array_equal(seen["sampler"][0], image_labels.numpy()), (
        "stage 3's PK sampler does not draw over the association's pseudo-labels (labels.parquet)"
    )
    for index, (n_texts, targets) in zip(seen["batches"], seen["i2tce"], strict=True):
        assert n_texts == n_clusters and torch.equal(targets, image_labels[index]), (
            "L_i2tce_inter (Eq. 15) does not use one text per pseudo-label of the association"
        )
    assert len(seen["ical"]) == len(seen["batches"])  # ICAL is on in this epoch
    for labels in seen["ical"]:
        assert torch.equal(labels, cluster_of_gid), (
            "ICAL's positives (Eq. 19) do not come from the association's pseudo-labels"
        )


class _Stop(Exception):
    pass


def test_camera_centering_setting_reaches_the_association(
    tiny_dataset: dict, intra_run: dict, tmp_path: Path
) -> None:
    """train.camera_centering: true associates the camera-centred centroids (and only then);
    train.association_search reaches the search."""
    from ccafl.association.graph import associate, center_per_camera
    from ccafl.association.pseudo_labels import associate_identities
    from ccafl.memory import class_mean_features

    calls = []

    def spy(features, gids, cameras, n_gids, threshold, **kwargs):
        calls.append(kwargs)
        raise _Stop

    for centring, search in ((False, "auto"), (True, "approximate")):
        train = {"epochs": 3, "camera_centering": centring}
        if search != "auto":  # auto: the default
            train["association_search"] = search
        config = tiny_config(tiny_dataset["root"], train=train)
        with pytest.MonkeyPatch.context() as patch, pytest.raises(_Stop):
            patch.setattr(inter, "associate_identities", spy)
            inter.run_inter_epochs(
                Settings.from_config(config),
                intra_run["data"],
                intra_run["checkpoint"],
                tiny_dataset["clip"],
                [3],
                [tmp_path / "epoch_003"],
            )
    # No domain column outside the DG mode: one association over all gids.
    assert calls == [
        {"camera_centering": False, "search": "auto", "domains": None},
        {"camera_centering": True, "search": "approximate", "domains": None},
    ]

    # What the flag does: Eq. 12 on center_per_camera of the gid centroids.
    data = intra_run["data"]
    features = torch.randn(len(data.gids), 8)
    cameras = np.zeros(data.n_gids, dtype=np.int64)
    cameras[data.gids] = data.cameras
    centred = associate_identities(
        features, data.gids, data.cameras, data.n_gids, 1.5, camera_centering=True
    )
    centroids = class_mean_features(features, torch.as_tensor(data.gids), data.n_gids)
    expected, _ = associate(center_per_camera(centroids.numpy(), cameras), cameras, 1.5)
    np.testing.assert_array_equal(centred.gid_labels, expected)


@pytest.mark.parametrize("alignment_epochs", [1, 2])
def test_refined_clusters_with_camera_alignment_resume_exactly(
    tiny_dataset: dict, intra_run: dict, tmp_path: Path, alignment_epochs: int
) -> None:
    """CALR's stage B (train.labels: refined) with the camera classifier in its first epoch
    or both: epochs 3-4 in one job equal epoch 3, then epoch 4 resumed from its checkpoint
    (with 2, the resumed job rebuilds the classifier from the checkpoint)."""
    from ccafl.inference.checkpoints import load_checkpoint
    from ccafl.training.alignment import CHECKPOINT_KEY

    config = tiny_config(
        tiny_dataset["root"],
        train={"epochs": 4, "labels": "refined", "losses": {"ical": False}},
        clusters={"alignment_epochs": alignment_epochs, "weights_after": 1},
    )
    settings = Settings.from_config(config)
    data, start, clip = intra_run["data"], intra_run["checkpoint"], tiny_dataset["clip"]
    block = [tmp_path / "block" / f"epoch_{e:03d}" for e in (3, 4)]
    inter.run_inter_epochs(settings, data, start, clip, [3, 4], block)
    split = [tmp_path / "split" / f"epoch_{e:03d}" for e in (3, 4)]
    inter.run_inter_epochs(settings, data, start, clip, [3], split[:1])
    inter.run_inter_epochs(settings, data, split[0] / "checkpoint.pt", clip, [4], split[1:])
    a = load_checkpoint(block[1] / "checkpoint.pt")["model"]
    b = load_checkpoint(split[1] / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert CHECKPOINT_KEY in load_checkpoint(block[0] / "checkpoint.pt")
    first = pd.read_parquet(block[0] / "log.parquet")
    second = pd.read_parquet(block[1] / "log.parquet")
    assert "loss_camera" in first.columns and first["loss_camera"].notna().all()
    assert ("loss_camera" in second.columns) == (alignment_epochs == 2)
    assert "loss_ical" not in first.columns  # no gid-level labels for L_ICAL
    labels = pd.read_parquet(block[0] / "labels.parquet")
    assert len(labels) == len(data.train)  # one row per image


def test_person_id_loss_trains_its_head_and_resumes_exactly(
    tiny_dataset: dict, intra_run: dict, tmp_path: Path
) -> None:
    """fgdi.id_loss on fixed labels (as the supervised run's): the classifier and its Adam
    travel in every checkpoint, so epochs 3-4 in one job equal epoch 3, then epoch 4 resumed."""
    from ccafl.inference.checkpoints import load_checkpoint
    from ccafl.training.person_id import CHECKPOINT_KEY

    config = tiny_config(
        tiny_dataset["root"], train={"epochs": 4, "labels": "supervised"}, fgdi={"id_loss": 1.0}
    )
    settings = Settings.from_config(config)
    data, start, clip = intra_run["data"], intra_run["checkpoint"], tiny_dataset["clip"]
    labels = np.arange(data.n_gids) % 7  # fixed labels, one per gid
    block = [tmp_path / "block" / f"epoch_{e:03d}" for e in (3, 4)]
    inter.run_inter_epochs(settings, data, start, clip, [3, 4], block, given_labels=labels)
    split = [tmp_path / "split" / f"epoch_{e:03d}" for e in (3, 4)]
    inter.run_inter_epochs(settings, data, start, clip, [3], split[:1], given_labels=labels)
    inter.run_inter_epochs(
        settings, data, split[0] / "checkpoint.pt", clip, [4], split[1:], given_labels=labels
    )
    a, b = load_checkpoint(block[1] / "checkpoint.pt"), load_checkpoint(split[1] / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    first_head = load_checkpoint(block[0] / "checkpoint.pt")[CHECKPOINT_KEY]["head"]["weight"]
    assert first_head.shape[0] == 7  # one row per label
    assert torch.equal(a[CHECKPOINT_KEY]["head"]["weight"], b[CHECKPOINT_KEY]["head"]["weight"])
    assert not torch.equal(a[CHECKPOINT_KEY]["head"]["weight"], first_head)  # it trains
    log = pd.read_parquet(block[1] / "log.parquet")
    assert log["loss_id"].notna().all() and (log["loss_id"] > 0).all()
    plain = tiny_config(tiny_dataset["root"], train={"epochs": 4, "labels": "supervised"})
    out = [tmp_path / "plain" / "epoch_003"]
    inter.run_inter_epochs(Settings.from_config(plain), data, start, clip, [3], out,
                           given_labels=labels)  # fmt: skip
    assert "loss_id" not in pd.read_parquet(out[0] / "log.parquet").columns
    assert CHECKPOINT_KEY not in load_checkpoint(out[0] / "checkpoint.pt")


def test_camera_alignment_reverses_the_encoders_gradient() -> None:
    from ccafl.training.alignment import CameraAlignment

    f = torch.randn(8, 6, requires_grad=True)
    cameras = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    alignment = CameraAlignment.create(6, 3, 1e-3, 0.0, "nll", torch.device("cpu"))
    torch.manual_seed(1)  # the same dropout mask both times
    alignment.loss(f, cameras).backward()
    through_grl = f.grad.clone()
    f.grad = None
    torch.manual_seed(1)
    logits = alignment.head(torch.nn.functional.normalize(f, dim=1))
    torch.nn.functional.cross_entropy(logits, cameras).backward()
    assert through_grl.abs().sum() > 0
    torch.testing.assert_close(through_grl, -f.grad)
    before = [p.clone() for p in alignment.head.parameters()]
    alignment.step()
    assert any(
        not torch.equal(p, q) for p, q in zip(alignment.head.parameters(), before, strict=True)
    )
