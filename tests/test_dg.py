"""The domain-generalisation mode's data and checks: synthetic domains, pooled sources, held-out
targets, the DG table and the one-line errors (issue 20)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import build_market_tree

from ccafl.checks import config_problems, dg_domain_problems
from ccafl.config import deep_merge, validate
from ccafl.data.pooled import PID_STRIDE, domains_from_config, pool_sources, target_tables
from ccafl.data.synthetic import SyntheticSpec, synthesize
from ccafl.data.synthetic.cameras import sample_cameras
from ccafl.dg_table import AVERAGE, dg_table

REPO = Path(__file__).resolve().parents[1]

WORLD = {
    "n_cameras": 2,
    "n_train_ids": 6,
    "n_test_ids": 4,
    "n_pretrain_ids": 1,
    "cameras_per_id": [2, 2],
    "frames_per_camera": [2, 2],
    "n_distractors": 1,
    "n_junk": 1,
    "height": 32,
    "width": 16,
}


def dg_config(root: Path, **sections) -> dict:
    base = {
        "dataset": {"name": "dg", "format": "pooled", "root": str(root)},
        "synthetic": WORLD,
        "dg": {
            "sources": ["b", "a"],
            "targets": ["t"],
            "domains": {
                "a": {"synthetic": {"seed": 1, "domain_shift": 1.0}},
                "b": {"synthetic": {"seed": 2, "domain_shift": 1.0, "n_cameras": 3}},
                "t": {"synthetic": {"seed": 3, "domain_shift": 1.0}},
            },
        },
        "clip": {"model": "ccafl-tiny-rn", "pretrained": "captions"},
    }
    return validate(deep_merge(base, sections))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ccafl.data.pooled import synthetic_spec_config

    root = tmp_path_factory.mktemp("dg") / "resources" / "dg"
    config = dg_config(root)
    for name in ("a", "b", "t"):
        spec = SyntheticSpec.from_config(synthetic_spec_config(config, name))
        synthesize(root / name, spec, progress=False)
    return {"root": root, "config": config, "domains": domains_from_config(config)}


def test_a_world_without_domain_shift_is_unchanged() -> None:
    """domain_shift 0 leaves every camera and the spec.json exactly as before the key."""
    plain, zero = SyntheticSpec(seed=4), SyntheticSpec(seed=4, domain_shift=0.0)
    for a, b in zip(sample_cameras(plain), sample_cameras(zero), strict=True):
        assert np.array_equal(a.gains, b.gains) and np.array_equal(a.background, b.background)
    assert "domain_shift" not in plain.to_dict()
    assert SyntheticSpec(domain_shift=0.5).to_dict()["domain_shift"] == 0.5


def test_domain_shift_gives_every_camera_of_a_world_one_look() -> None:
    """The shift moves all cameras of a world by one shared cast, differently per world."""
    base = sample_cameras(SyntheticSpec(seed=4))
    shifted = sample_cameras(SyntheticSpec(seed=4, domain_shift=1.0))
    ratios = np.stack([s.gains / b.gains for s, b in zip(shifted, base, strict=True)])
    assert np.allclose(ratios, ratios[0], atol=1e-5)  # one cast for the world
    assert not np.allclose(ratios[0], 1.0, atol=0.02)
    other = sample_cameras(SyntheticSpec(seed=5, domain_shift=1.0))
    other_base = sample_cameras(SyntheticSpec(seed=5))
    assert not np.allclose(other[0].gains / other_base[0].gains, ratios[0], atol=0.02)


def test_pooled_sources_have_disjoint_ids_cameras_and_sorted_domain_labels(rendered) -> None:
    domains, root = rendered["domains"], rendered["root"]
    assert (domains["a"].label, domains["b"].label, domains["t"].label) == (0, 1, -1)
    out = root.parent / "pooled"
    summary = pool_sources([domains["b"], domains["a"]], root, out, verify="none")
    train = pd.read_parquet(out / "train.parquet")
    truth = pd.read_parquet(out / "train_truth.parquet")
    assert "pid" not in train.columns  # the ICS rule holds for the pooled table too
    assert set(train["domain"]) == {0, 1}
    assert summary["n_cameras"] == 2 + 3
    for label, name in ((0, "a"), (1, "b")):
        rows = train[train["domain"] == label]
        assert rows["camera_name"].str.startswith(f"{name}/").all()
        assert rows["path"].str.startswith(f"{name}/").all()
        assert all((root / p).is_file() for p in rows["path"])
        pids = truth.loc[rows.index, "pid"]
        assert pids.between((label + 1) * PID_STRIDE, (label + 2) * PID_STRIDE - 1).all()
    # The gids cover every (camera, person) once: the sources' ICS ids side by side.
    own = [pd.read_parquet(out / "train.parquet").groupby("camera")["intra_id"].nunique().sum()]
    assert train["gid"].nunique() == own[0] == train["gid"].max() + 1
    query = pd.read_parquet(out / "query.parquet")
    assert query["path"].str.match(r"^[ab]/").all()  # in-domain evaluation: sources only


def test_a_target_is_written_as_query_and_gallery_only(rendered) -> None:
    domains, root = rendered["domains"], rendered["root"]
    out = root.parent / "targets" / "t"
    summary = target_tables(domains["t"], root, out, verify="none")
    assert sorted(p.name for p in out.iterdir()) == [
        "gallery.parquet",
        "query.parquet",
        "summary.json",
    ]
    query = pd.read_parquet(out / "query.parquet")
    assert query["path"].str.startswith("t/query/").all()
    assert summary["query"]["images"] == len(query) > 0


def problems(root: Path, **sections) -> str:
    return "; ".join(config_problems(dg_config(root, **sections)))


def test_one_source_is_named(tmp_path: Path) -> None:
    message = problems(tmp_path, dg={"sources": ["a"]})
    assert message.startswith("dg.sources: ['a'] names fewer than two datasets")
    assert "domain classifier needs two" in message


def test_a_target_among_the_sources_is_named(tmp_path: Path) -> None:
    message = problems(tmp_path, dg={"sources": ["a", "b", "t"]})
    assert message.startswith("dg.targets: t is also in dg.sources")


def test_an_unknown_domain_is_named(tmp_path: Path) -> None:
    message = problems(tmp_path, dg={"targets": ["x"]})
    assert message.startswith("dg.targets: x not in dg.domains (known: a, b, t)")


def test_dg_keys_without_the_pooled_format_are_named(tmp_path: Path) -> None:
    message = problems(tmp_path, dataset={"format": "synthetic"})
    assert "dataset.format is synthetic: set dataset.format: pooled" in message


def test_captions_from_a_target_are_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, dg={"captions": "t"})
    assert message.startswith("dg.captions: t must be a synthetic source")


def test_a_target_dataset_missing_its_folders_is_named(tmp_path: Path) -> None:
    market = build_market_tree(tmp_path / "market")
    (market / "query").rename(tmp_path / "moved")
    config = dg_config(
        tmp_path / "resources" / "dg",
        dg={"domains": {"t": {"format": "market1501", "root": str(market), "synthetic": {}}}},
    )
    config["dg"]["domains"]["t"].pop("synthetic")
    found = dg_domain_problems(config, tmp_path)
    assert found == [f"dg.domains.t.root ({market}): dataset folder not found: {market / 'query'}"]


def test_synthetic_domains_only_below_resources(tmp_path: Path) -> None:
    found = dg_domain_problems(dg_config(tmp_path / "elsewhere"), tmp_path)
    assert found and found[0].startswith("dataset.root (")
    assert "only below resources/" in found[0]


def write_metrics(path: Path, m: float, r1: float) -> Path:
    path.write_text(json.dumps({"mAP": m, "rank1": r1}))
    return path


def test_dg_table_averages_targets_per_seed_then_seeds(tmp_path: Path) -> None:
    runs = [
        ("m", 0, "x", write_metrics(tmp_path / "0x.json", 0.2, 0.3)),
        ("m", 0, "y", write_metrics(tmp_path / "0y.json", 0.4, 0.5)),
        ("m", 1, "x", write_metrics(tmp_path / "1x.json", 0.4, 0.5)),
        ("m", 1, "y", write_metrics(tmp_path / "1y.json", 0.6, 0.7)),
    ]
    table = dg_table(runs).set_index("target")
    assert table.loc["x", "mAP"] == pytest.approx(30.0)
    assert table.loc[AVERAGE, "mAP"] == pytest.approx(40.0)  # seeds' averages 30 and 50
    assert table.loc[AVERAGE, "mAP std"] == pytest.approx(np.std([30.0, 50.0], ddof=1))
    assert table.loc[AVERAGE, "seeds"] == 2


def test_leave_one_out_tables_merge_into_one_average(tmp_path: Path) -> None:
    """Two held-out runs' tables (one target each) give, by dg-table --from, the table of
    both targets, averaged per seed over the targets, as if one run had held out both."""
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ccafl", "dg-table", *args],
            cwd=tmp_path, capture_output=True, text=True,
        )  # fmt: skip

    values = {("x", 0): 0.2, ("x", 1): 0.4, ("y", 0): 0.4, ("y", 1): 0.6}
    for target in ("x", "y"):
        runs = []
        for seed in (0, 1):
            path = write_metrics(tmp_path / f"{seed}{target}.json", values[target, seed], 0.5)
            runs += ["--run", "m", str(seed), target, path.name]
        out = [f"--{kind}" for kind in ("out", "csv", "json")]
        names = [f"{target}/table.{ext}" for ext in ("md", "csv", "json")]
        done = cli(*runs, *[a for pair in zip(out, names, strict=True) for a in pair])
        assert done.returncode == 0, done.stderr
    done = cli(
        "--from", "x/table.json", "--from", "y/table.json",
        "--out", "loo.md", "--csv", "loo.csv", "--json", "loo.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "loo.csv").set_index("target")
    assert table.loc[AVERAGE, "mAP"] == pytest.approx(40.0)  # per seed 30 and 50
    assert table.loc[AVERAGE, "mAP std"] == pytest.approx(np.std([30.0, 50.0], ddof=1))
    assert (
        "| m | 30.0 ± 14.1 / 50.0 | 50.0 ± 14.1 / 50.0 | 40.0 ± 14.1 / 50.0 |"
        in (tmp_path / "loo.md").read_text()
    )
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"rows": []}))
    done = cli("--from", "old.json", "--out", "a.md", "--csv", "a.csv", "--json", "a.json")
    assert done.returncode != 0 and "old.json: no 'runs' list" in done.stderr


def test_guiding_loss_signs_pull_towards_the_chosen_prompt() -> None:
    """paper: lower when f is nearer its domain-invariant prompt t+; code: the reverse."""
    import torch

    from ccafl.losses import guiding_loss

    f = torch.tensor([[1.0, 0.0]])
    near, far = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 1.0]])
    paper_good = guiding_loss(f, near, far, "paper")
    paper_bad = guiding_loss(f, far, near, "paper")
    assert paper_good < paper_bad
    assert torch.isclose(guiding_loss(f, near, far, "code"), paper_bad)
    # The closed form: log(1 + exp(cos(f, t-) - cos(f, t+))).
    cos_near = float(torch.nn.functional.cosine_similarity(f, near))
    assert float(paper_good) == pytest.approx(np.log1p(np.exp(0.0 - cos_near)), rel=1e-6)
    with pytest.raises(ValueError, match="apn_sign"):
        guiding_loss(f, near, far, "other")


def test_domain_prompts_keep_the_identity_tokens_and_learn_one_token_per_domain() -> None:
    import torch

    from ccafl.models.backbone import PromptTextEncoder
    from ccafl.models.factory import build_clip
    from ccafl.models.prompt_learner import DomainPromptLearner, PromptLearner
    from ccafl.settings import Settings

    settings = Settings.from_config(
        validate({"clip": {"model": "ccafl-tiny-rn", "pretrained": None}})
    )
    torch.manual_seed(0)
    clip = build_clip(settings.clip, (64, 32), None)
    identity = PromptLearner(clip, n_classes=5, n_tokens=4)
    domains = DomainPromptLearner(clip, identity, n_domains=3)
    assert [name for name, _ in domains.named_parameters()] == ["ctx"]
    assert tuple(domains.ctx.shape[:2]) == (3, 1)
    encoder = PromptTextEncoder(clip)
    labels, doms = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    text = encoder(*domains(labels, doms))
    text.sum().backward()
    assert identity.ctx.grad is None  # the identity tokens are detached
    assert domains.ctx.grad[2].abs().sum() == 0 and domains.ctx.grad[1].abs().sum() > 0
    assert not torch.allclose(text[0], text[1])  # same identity, another domain token


def test_the_domain_adversary_reverses_the_gradient_into_the_prompts() -> None:
    """Through the GRL the prompts' gradient is -lambda times the classifier loss's."""
    import torch

    from ccafl.losses import domain_adversarial_loss, reverse_gradient
    from ccafl.models.domain_classifier import DomainClassifier

    torch.manual_seed(0)
    classifier = DomainClassifier(8, 2)
    text = torch.randn(6, 8, requires_grad=True)
    domains = torch.tensor([0, 1, 0, 1, 0, 1])
    domain_adversarial_loss(classifier(reverse_gradient(text, 0.1)), domains).backward()
    reversed_grad = text.grad.clone()
    text.grad = None
    domain_adversarial_loss(classifier(text), domains).backward()
    assert torch.allclose(reversed_grad, -0.1 * text.grad, atol=1e-7)
    with pytest.raises(ValueError, match="at least 2 domains"):
        DomainClassifier(8, 1)


class TargetRead(BaseException):
    """A BaseException, so that no ``except Exception`` in the code under test swallows it."""


_GUARDED: dict = {"root": None}


def _audit_target(event: str, args: tuple) -> None:
    root = _GUARDED["root"]
    if root is None or event != "open" or not args:
        return
    source = args[0]
    if isinstance(source, str | bytes | Path) and str(
        Path(os.fsdecode(source)).resolve()
    ).startswith(root):
        raise TargetRead(f"DG leak: a training stage opened {source} (a target domain's file)")


sys.addaudithook(_audit_target)  # acts only while a test arms it


def test_no_training_stage_reads_a_target_domain(rendered, tmp_path: Path) -> None:
    """Pooling, CLIP-FGDI's prior stage, stage 1 with its domain prompts, stage 2 and a
    stage-3 epoch with the guiding loss run while every open of a file of the target's folder
    is refused; a first read proves the guard catches one."""
    import torch

    from ccafl.association.pseudo_labels import read_given_labels
    from ccafl.cli import main
    from ccafl.settings import Settings
    from ccafl.training.inter import run_inter_epochs
    from ccafl.training.intra import run_intra
    from ccafl.training.prior import run_prior
    from ccafl.training.prompt import run_prompt
    from ccafl.training.state import TrainingData

    root, domains = rendered["root"], rendered["domains"]
    target_image = next((root / "t" / "bounding_box_train").glob("*.jpg"))
    config = dg_config(
        root,
        prompt={"epochs": 1, "batch_size": 8},
        train={"epochs": 2, "intra_epochs": 1, "adv_start": 2, "warmup_epochs": 1, "P": 2,
               "K": 2, "iters_per_epoch": 1, "num_workers": 0, "labels": "supervised"},
        fgdi={"domain_prompts": True, "domain_epochs": 1, "prior_epochs": 1, "id_loss": 1.0},
        clip={"pretrained": None},
        input={"height": 64, "width": 32},
    )  # fmt: skip
    settings = Settings.from_config(config)
    ics = tmp_path / "ics"
    _GUARDED["root"] = str((root / "t").resolve())
    try:
        with pytest.raises(TargetRead):
            target_image.open("rb")
        pool_sources([domains["a"], domains["b"]], root, ics, verify="header")
        _GUARDED["root"] = None  # diagnostics-side: the supervised run's labels from the truth
        main(["supervised-labels", "--train", str(ics / "train.parquet"), "--truth",
              str(ics / "train_truth.parquet"), "--out", str(tmp_path / "labels.parquet")])  # fmt: skip
        _GUARDED["root"] = str((root / "t").resolve())
        torch.manual_seed(0)
        images = TrainingData.load(root, ics, None)
        given = read_given_labels(tmp_path / "labels.parquet", images.n_gids)
        run_prior(settings, images, given, None, tmp_path / "prior")
        prior_clip = tmp_path / "prior" / "clip.pt"
        run_prompt(settings, root, ics, prior_clip, tmp_path / "p",
                   domain_text_out=tmp_path / "p" / "domain_text_features.parquet")  # fmt: skip
        data = TrainingData.load(root, ics, tmp_path / "p")
        data = data.with_domain_text(tmp_path / "p" / "domain_text_features.parquet")
        run_intra(settings, data, prior_clip, tmp_path / "intra")
        run_inter_epochs(settings, data, tmp_path / "intra" / "checkpoint.pt", None, [2],
                         [tmp_path / "e2"], given_labels=given)  # fmt: skip
    except TargetRead as leak:
        raise AssertionError(str(leak)) from None
    finally:
        _GUARDED["root"] = None
    log = pd.read_parquet(tmp_path / "e2" / "log.parquet")
    assert "loss_apn" in log.columns and log["loss_apn"].notna().all()
    prompt_log = pd.read_parquet(tmp_path / "p" / "log.parquet")
    assert {"loss_domain", "domain_acc", "loss_domain_prompt"} <= set(prompt_log.columns)
    domain_text = pd.read_parquet(tmp_path / "p" / "domain_text_features.parquet")
    assert len(domain_text) == data.n_gids and set(domain_text["domain"]) == {0, 1}


def test_leave_one_out_runs_hold_out_each_domain_but_the_captions_one() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dg_leave_one_out", REPO / "scripts" / "dg_leave_one_out.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = yaml.safe_load((REPO / "config" / "dg-synthetic.yaml").read_text())
    runs = dict(script.held_out_runs(config, None))
    assert list(runs) == ["dg-synthetic-east", "dg-synthetic-south", "dg-synthetic-west"]
    assert runs["dg-synthetic-south"]["dg"] == {
        "sources": ["north", "east", "west"],
        "targets": ["south"],
    }
    with pytest.raises(SystemExit, match="north is dg.captions"):
        script.held_out_runs(config, ["north"])
    with pytest.raises(SystemExit, match=r"\['mars'\] not in dg.domains"):
        script.held_out_runs(config, ["mars"])


def test_leave_one_out_over_the_real_protocol_keeps_cuhk_sysu_a_source() -> None:
    """Protocols 2 and 3: every dataset but CUHK-SYSU held out in turn (no captions rule for
    OpenAI weights), the Protocol-3 overlay merged as Snakemake merges it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dg_leave_one_out", REPO / "scripts" / "dg_leave_one_out.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    files = [REPO / "config" / "dg-protocol2.yaml", REPO / "config" / "dg-protocol3.yaml"]
    config = script.merged_config(files)
    assert config["dg"]["domains"]["msmt17"] == {
        "format": "msmt17",
        "root": "data/MSMT17_V1",
        "combine_all": True,
    }
    runs = dict(script.held_out_runs(config, None))
    assert list(runs) == ["dg-protocol3-market1501", "dg-protocol3-msmt17", "dg-protocol3-cuhk03"]
    assert runs["dg-protocol3-market1501"]["dg"]["sources"] == ["msmt17", "cuhk03", "cuhksysu"]
    with pytest.raises(SystemExit, match="training only"):
        script.held_out_runs(config, ["cuhksysu"])


def test_the_extra_dg_rows_overlay_checks_and_sets_what_its_rows_say() -> None:
    """config/dg-extra-rows.yaml (the documented "More rows") laid over the synthetic
    protocol: every run's config passes the cross-field checks (fgdi.id_loss only on true ids)
    and the CLIP-FGDI-test rows evaluate before the necks by squared Euclidean."""
    from ccafl.ablation import run_config
    from ccafl.checks import check_config, run_configs
    from ccafl.config import deep_merge

    config = deep_merge(
        yaml.safe_load((REPO / "config" / "dg-synthetic.yaml").read_text()),
        yaml.safe_load((REPO / "config" / "dg-extra-rows.yaml").read_text()),
    )
    config = check_config(config)
    assert len(run_configs(config)) == 1 + 2 * 11  # main run, 11 variants at 2 seeds
    test_row = run_config(config, "ablation/fgdi-fgditest-s0/")
    assert (test_row["eval"]["neck"], test_row["eval"]["distance"]) == ("before", "euclidean")
    id_row = run_config(config, "ablation/supervised-id-s1/")
    assert id_row["fgdi"]["id_loss"] == 1.0 and id_row["train"]["labels"] == "supervised"
    prior_row = run_config(config, "ablation/fgdi-prior-s0/")
    assert prior_row["fgdi"]["prior_epochs"] == 3 and prior_row["fgdi"]["domain_prompts"]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"train": {"labels": "association"}},
            "fgdi.prior_epochs (2) trains on the true person ids",
        ),
        ({"fgdi": {"id_loss": 0.0, "triplet": 0.0}}, "both weights are 0"),
        ({"dataset": {"format": "synthetic"}}, "is a stage of the DG mode"),
    ],
)
def test_a_prior_stage_that_cannot_run_is_one_line(sections: dict, expected: str) -> None:
    base = {"train": {"labels": "supervised"}, "fgdi": {"prior_epochs": 2, "id_loss": 1.0}}
    config = validate(deep_merge(deep_merge(dg_config(Path("/nowhere")), base), sections))
    found = [p for p in config_problems(config) if "prior_epochs" in p]
    assert len(found) == 1 and expected in found[0] and "\n" not in found[0]
    assert not [p for p in config_problems(validate(deep_merge(dg_config(Path("/x")), base)))
                if "prior_epochs" in p]  # fmt: skip


def test_the_prior_stage_trains_the_image_tower_and_keeps_the_text_tower(rendered, tmp_path):
    """Its CLIP: the input's text tower bit for bit, an image tower that the ID and triplet
    losses moved, at the ReID geometry (stage 1 loads it as it is); the prompt stage started
    from it sees other image features than from the pretrained CLIP."""
    import torch

    from ccafl.association.pseudo_labels import read_given_labels
    from ccafl.cli import main
    from ccafl.models.backbone import create_clip
    from ccafl.models.factory import build_clip
    from ccafl.settings import Settings
    from ccafl.training.prior import run_prior
    from ccafl.training.state import TrainingData

    root, domains = rendered["root"], rendered["domains"]
    ics = tmp_path / "ics"
    pool_sources([domains["a"], domains["b"]], root, ics, verify="header")
    main(["supervised-labels", "--train", str(ics / "train.parquet"), "--truth",
          str(ics / "train_truth.parquet"), "--out", str(tmp_path / "labels.parquet")])  # fmt: skip
    torch.manual_seed(0)
    pretrained = tmp_path / "pretrained.pt"
    torch.save({"model": create_clip("ccafl-tiny-rn").state_dict()}, pretrained)
    config = dg_config(
        root,
        clip={"pretrained": str(pretrained)},
        input={"height": 64, "width": 32},
        train={"P": 2, "K": 2, "iters_per_epoch": 2, "num_workers": 0, "labels": "supervised",
               "epochs": 3, "intra_epochs": 1, "warmup_epochs": 1},
        fgdi={"prior_epochs": 2, "id_loss": 1.0, "triplet": 1.0},
    )  # fmt: skip
    settings = Settings.from_config(config)
    data = TrainingData.load(root, ics, None)
    labels = read_given_labels(tmp_path / "labels.parquet", data.n_gids)
    metrics = run_prior(settings, data, labels, pretrained, tmp_path / "prior")
    log = pd.read_parquet(tmp_path / "prior" / "log.parquet")
    assert {"loss_id", "loss_triplet"} <= set(log.columns)
    assert sorted(set(log["epoch"])) == [1, 2] and len(log) == 4
    assert metrics["n_labels"] == int(labels.max()) + 1

    before = build_clip(settings.clip, settings.input.size, pretrained).state_dict()
    saved = torch.load(tmp_path / "prior" / "clip.pt", weights_only=False)["model"]
    after = build_clip(settings.clip, settings.input.size, tmp_path / "prior" / "clip.pt")
    assert all(torch.equal(after.state_dict()[k], v) for k, v in saved.items())
    text = [k for k in saved if not k.startswith("visual.")]
    assert text and all(torch.equal(saved[k], before[k]) for k in text)
    moved = [k for k in saved if k.startswith("visual.") and not torch.equal(saved[k], before[k])]
    assert any("layer" in k or "conv" in k for k in moved)
