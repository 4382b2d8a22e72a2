"""Typed, frozen sections of a validated config, built once at the edge and passed down.

The CLI (and any file that carries a config: a checkpoint, a model file) turns the validated
config dict into `Settings` once; code below it reads attributes (``train.lr``), never the raw
dict, so a typo is an AttributeError at the line that makes it and every key a stage reads is
visible in its signature. `Settings.raw` keeps the dict itself, only to be stored (checkpoints,
model files) and fingerprinted.

A section holds the keys it was given. A stage run by a workflow rule is given exactly the keys
its rule passes (``--stage-keys``; strict under ``CCAFL_STRICT_CONFIG=1``): reading a key it
was not given raises KeyError naming it, as indexing the restricted dict did, instead of
silently using a default that Snakemake would not rerun for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class _Absent:
    """A key this stage was not given (see the module docstring)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


class Section:
    """Base of a config section: a frozen dataclass whose fields are the section's keys."""

    KEY: ClassVar[str] = ""
    NESTED: ClassVar[dict[str, type[Section]]] = {}

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is ABSENT:
            section = object.__getattribute__(self, "KEY")
            raise KeyError(f"{section}.{name}: this stage was not given the key")
        return value

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None):
        """The section of ``values`` (a config section's dict); absent keys stay absent."""
        values = values or {}
        kwargs = {}
        for item in dataclasses.fields(cls):
            if item.name not in values:
                continue
            value = values[item.name]
            nested = cls.NESTED.get(item.name)
            if nested is not None:
                value = nested.from_config(value)
            kwargs[item.name] = value
        return cls(**kwargs)

    def __repr__(self) -> str:
        given = {
            item.name: object.__getattribute__(self, item.name)
            for item in dataclasses.fields(self)
            if self.has(item.name)
        }
        return f"{type(self).__name__}({given})"

    def replace(self, **changes: Any):
        """A copy with ``changes``; absent keys stay absent."""
        values = {
            item.name: object.__getattribute__(self, item.name) for item in dataclasses.fields(self)
        }
        return type(self)(**{**values, **changes})

    def has(self, name: str) -> bool:
        return object.__getattribute__(self, name) is not ABSENT

    def get(self, name: str, default: Any = None) -> Any:
        """A key that files written by older versions may lack (e.g. ``train.feature``)."""
        return getattr(self, name) if self.has(name) else default


def _absent() -> Any:
    return field(default=ABSENT)


@dataclass(frozen=True, repr=False, eq=False)
class DatasetSection(Section):
    KEY: ClassVar[str] = "dataset"
    name: str = _absent()
    format: str = _absent()
    root: str = _absent()
    layout: str = _absent()
    verify_images: str = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class InputSection(Section):
    KEY: ClassVar[str] = "input"
    height: int = _absent()
    width: int = _absent()

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the network's input images."""
        return self.height, self.width


@dataclass(frozen=True, repr=False, eq=False)
class ClipSection(Section):
    KEY: ClassVar[str] = "clip"
    model: str = _absent()
    pretrained: str | None = _absent()
    quick_gelu: bool | str = _absent()
    last_stride_one: bool = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class ClipPretrainSection(Section):
    KEY: ClassVar[str] = "clip_pretrain"
    seed: int = _absent()
    epochs: int = _absent()
    batch_size: int = _absent()
    lr: float = _absent()
    weight_decay: float = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class PromptSection(Section):
    KEY: ClassVar[str] = "prompt"
    n_tokens: int = _absent()
    seed: int = _absent()
    epochs: int = _absent()
    batch_size: int = _absent()
    lr: float = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class LossSwitches(Section):
    KEY: ClassVar[str] = "train.losses"
    intra2: bool = _absent()
    i2tce: bool = _absent()
    ical: bool = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class TrainSection(Section):
    KEY: ClassVar[str] = "train"
    NESTED: ClassVar[dict[str, type[Section]]] = {"losses": LossSwitches}
    epochs: int = _absent()
    intra_epochs: int = _absent()
    adv_start: int = _absent()
    warmup_epochs: int = _absent()
    P: int = _absent()
    K: int = _absent()
    lr: float = _absent()
    weight_decay: float = _absent()
    feature: str = _absent()
    lam: float = _absent()
    temperature: float = _absent()
    momentum: float = _absent()
    eps: float = _absent()
    threshold: float = _absent()
    camera_centering: bool = _absent()
    association_search: str = _absent()
    label_smoothing: float = _absent()
    classifier_temperature: float = _absent()
    classifier_lr: float = _absent()
    iters_per_epoch: int | None = _absent()
    losses: LossSwitches = _absent()
    epochs_per_job: int = _absent()
    labels: str = _absent()
    camera_labels: str = _absent()
    intra_batches: str = _absent()
    image_cache: bool = _absent()
    seed: int = _absent()
    num_workers: int = _absent()
    amp: bool = _absent()

    @property
    def batch_size(self) -> int:
        """P identities x K images."""
        return self.P * self.K


@dataclass(frozen=True, repr=False, eq=False)
class ClustersSection(Section):
    """The unsupervised mode: stage A (``train.camera_labels: clusters``) and CALR's stage-B
    clustering (``train.labels: refined``)."""

    KEY: ClassVar[str] = "clusters"
    epochs: int = _absent()
    images_per_cluster: int = _absent()
    models: str = _absent()
    k1: int = _absent()
    k2: int = _absent()
    # Stage B (train.labels: refined), read by stage 3.
    k: int = _absent()
    min_similarity: float = _absent()
    min_size: int = _absent()
    pivot: str = _absent()
    refine: bool = _absent()
    weights_after: int = _absent()
    alignment_epochs: int = _absent()
    alignment_loss: str = _absent()


@dataclass(frozen=True, repr=False, eq=False)
class FgdiSection(Section):
    """CLIP-FGDI's domain parts in the DG mode: domain-adversarial identity prompts and
    domain-relevant prompts in stage 1, the guiding loss in stage 3. Read with ``get``: a run
    outside the DG mode is not given these keys and has them off."""

    KEY: ClassVar[str] = "fgdi"
    domain_prompts: bool = _absent()
    omega: float = _absent()
    grl_lambda: float = _absent()
    classifier_lr: float = _absent()
    domain_epochs: int = _absent()
    beta: float = _absent()
    apn_sign: str = _absent()
    triplet: float = _absent()
    id_loss: float = _absent()
    prior_epochs: int = _absent()

    @property
    def on(self) -> bool:
        return bool(self.get("domain_prompts", False))


@dataclass(frozen=True, repr=False, eq=False)
class EvalSection(Section):
    KEY: ClassVar[str] = "eval"
    batch_size: int = _absent()
    rerank: bool = _absent()
    neck: str = _absent()
    distance: str = _absent()


@dataclass(frozen=True, eq=False)
class Settings:
    """Every section a stage may read, and the validated dict they were built from."""

    raw: dict
    dataset: DatasetSection
    input: InputSection
    clip: ClipSection
    clip_pretrain: ClipPretrainSection
    prompt: PromptSection
    train: TrainSection
    clusters: ClustersSection
    eval: EvalSection
    fgdi: FgdiSection

    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "dataset": DatasetSection,
        "input": InputSection,
        "clip": ClipSection,
        "clip_pretrain": ClipPretrainSection,
        "prompt": PromptSection,
        "train": TrainSection,
        "clusters": ClustersSection,
        "eval": EvalSection,
        "fgdi": FgdiSection,
    }

    def replace(self, **sections: Section) -> Settings:
        """A copy with some sections replaced (``raw`` stays: it is what the run was given)."""
        return dataclasses.replace(self, **sections)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Built once per process, from a validated config (or a file's stored config)."""
        sections = {
            name: section.from_config(config.get(name)) for name, section in cls.SECTIONS.items()
        }
        return cls(raw=dict(config), **sections)
