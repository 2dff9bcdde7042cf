"""Stage configuration: one YAML file per stage, parsed into these dataclasses (their defaults are the only ones).

A stage file states what model to build (or which earlier stage to start from), the data mixture, what trains,
the optimiser and schedule, the loss, the seed, and how often to checkpoint. ``key=value`` arguments override any
field (``data.root=/data/pointllm``, ``optim.steps=200``); unknown or ill-typed keys are errors naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pointalign.config import AlignConfig, apply_overrides, from_dict
from pointalign.errors import ConfigError
from pointalign.training.stages import STAGES, TrainableConfig

DatasetName = Literal["brief", "detailed_description", "single_round", "multi_round"]

# Which PointLLM annotation file and conversation types each dataset name reads.
DATASET_FILES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "brief": ("PointLLM_brief_description_660K_filtered.json", None),
    "detailed_description": ("PointLLM_complex_instruction_70K.json", ("detailed_description",)),
    "single_round": ("PointLLM_complex_instruction_70K.json", ("single_round",)),
    "multi_round": ("PointLLM_complex_instruction_70K.json", ("multi_round",)),
}


@dataclass
class DataSource:
    """One dataset of the mixture: each step draws one dataset with probability proportional to ``ratio``."""

    name: DatasetName
    batch_size: int  # per process
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"data.mixture.{self.name}.batch_size: must be > 0")
        if self.ratio <= 0:
            raise ConfigError(f"data.mixture.{self.name}.ratio: must be > 0")


@dataclass
class DataConfig:
    root: str = "data/synth"  # a PointLLM-layout folder (the embedded dataset by default)
    file_points: int = 8192  # clouds are objaverse_data/{object_id}_{file_points}.npy
    resample: Literal["fps", "random"] = "fps"  # how clouds larger than the encoder's num_points are reduced
    mixture: tuple[DataSource, ...] = (DataSource("brief", 8),)
    fraction: float = 1.0  # train on a deterministic subset of each dataset (data-efficiency study)
    fraction_seed: int = 0  # which subset: the same seed gives the same objects for every run
    # Zero a training cloud's colours with this probability, so that the model also learns from xyz-only clouds
    # (ModelNet40's test clouds, and many users' scans, have no colour).
    colour_dropout: float = 0.0
    # For a cloud that lost its colours, its answers' colour words (data/colour_words.py) carry no loss and the
    # `words` stage leaves them out of its targets (the cloud cannot show them). Off by default: on cpu-small's 1a-2
    # it did not make the LLM name colours more often (111 against 117 of 200; README, tuning table).
    hide_dropped_colours: bool = False

    def __post_init__(self) -> None:
        if not self.mixture:
            raise ConfigError("data.mixture: needs at least one dataset")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction: must be in (0, 1], got {self.fraction}")
        if not 0.0 <= self.colour_dropout <= 1.0:
            raise ConfigError(f"data.colour_dropout: must be in [0, 1], got {self.colour_dropout}")


@dataclass
class OptimConfig:
    """AdamW; linear warmup from warmup_lr to lr, then cosine from lr to min_lr at the last step."""

    steps: int = 100  # optimizer steps
    lr: float = 1e-4  # peak ("init_lr" in the reference)
    warmup_steps: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    weight_decay: float = 0.05  # 0 for norms, biases and other 1-d parameters
    betas: tuple[float, ...] = (0.9, 0.999)
    grad_clip: float | None = None  # max global grad norm; None = no clipping

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError("optim.steps: must be > 0")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError("optim.warmup_steps: must be in [0, optim.steps]")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_lr < 0:
            raise ConfigError("optim: learning rates must be positive")
        if len(self.betas) != 2:
            raise ConfigError("optim.betas: needs two values")


@dataclass
class LossConfig:
    """The alignment loss; these fields override the model's ``align`` config for the stage."""

    align: bool = False
    layer: int | None = None  # None = the model preset's layer
    weight: float | None = None  # None = the preset's lambda
    span: Literal["exact", "legacy"] | None = None


@dataclass
class ContrastiveConfig:
    """Stage 0: point-text contrastive pretraining of the encoder against frozen MiniLM caption embeddings."""

    embed_dim: int = 384  # MiniLM's width
    init_temperature: float = 0.07
    zero_shot_every: int = 0  # evaluate zero-shot classification every N steps (0 = only at the end)
    colour_dropout: float = 0.5  # zero a cloud's colours with this probability (test clouds of ModelNet40 have none)
    # Also pretrain the bridge and the Q-Former with BLIP-2's image-text contrastive loss (the best of the query
    # outputs against the caption). The reference's Q-Former comes pretrained that way (on images); one that starts
    # from a text-only BERT gives nearly the same outputs for every object and stage 1 cannot fix that in a few steps.
    qformer: bool = False
    text_encoder: str = "minilm"  # "minilm" (packaged) or a local sentence-transformers folder
    # Hard negatives: every other place of a batch goes to a neighbour of the record before it, an object whose
    # caption is among that caption's ``neighbour_pool`` nearest (by the frozen text embedding). Nearest captions
    # share the class and differ in a colour or a part, so the losses must tell those apart, not only the class.
    hard_negatives: bool = False
    neighbour_pool: int = 8
    # Colour prediction: each Q-Former output also predicts its cloud's colour histogram (colour_bins^3 RGB cells;
    # the clouds whose colours were dropped are left out), a target every coloured cloud carries in itself; the
    # caption embeddings weigh a colour word lightly, so without it the Q-Former keeps the class better than the colour.
    colour_weight: float = 0.0  # 0 = off
    colour_bins: int = 3
    colour_queries: int = 0  # how many query outputs (the first ones) predict the colours; 0 = all of them

    def __post_init__(self) -> None:
        if self.neighbour_pool < 1:
            raise ConfigError(f"contrastive.neighbour_pool: must be >= 1, got {self.neighbour_pool}")
        if self.colour_weight < 0:
            raise ConfigError(f"contrastive.colour_weight: must be >= 0, got {self.colour_weight}")
        if self.colour_bins < 1:
            raise ConfigError(f"contrastive.colour_bins: must be >= 1, got {self.colour_bins}")
        if self.colour_queries < 0:
            raise ConfigError(f"contrastive.colour_queries: must be >= 0, got {self.colour_queries}")


@dataclass
class WordsConfig:
    """Stage kind ``words``: point tokens pulled towards the LLM's input embeddings of their caption's words."""

    max_df: float = 0.25  # caption tokens found in more than this share of the captions (" a", " with") are skipped
    temperature: float = 0.05  # softmax temperature of the cosine scores over the caption vocabulary

    def __post_init__(self) -> None:
        if not 0.0 < self.max_df <= 1.0:
            raise ConfigError(f"words.max_df: must be in (0, 1], got {self.max_df}")
        if self.temperature <= 0:
            raise ConfigError(f"words.temperature: must be > 0, got {self.temperature}")


@dataclass
class CacheConfig:
    """Feature cache: when everything before the modality projector is frozen, its outputs (the Q-Former outputs) are
    computed once per cloud and the projector runs on them (``training/feature_cache.py``)."""

    # auto = memory when the point encoder, bridge, Q-Former and query experts are all frozen
    kind: Literal["auto", "none", "memory", "disk"] = "auto"
    dir: str | None = None  # for "disk": default <out>/<stage>/feature_cache
    # Encode every cloud the stage can draw before its first step, in batches of `prefill_batch` over the sorted
    # cloud keys, instead of one cloud at a time when a step first draws it (on cpu-small a cloud costs about half
    # as much at batch 32: `python benchmarks/feature_cache.py`). The batches are fixed by the data, not by the
    # order of the draws, so a resumed run reads the same features; the coloured clouds and the xyz-only copies are
    # batched apart, so a stage that adds the copies to a cache of the coloured clouds encodes only the copies.
    # Worth it where the stages sharing the cache draw nearly every cloud anyway (cpu-small: 1a, 1000 steps of 32
    # over the 1200 coloured clouds; 1b, whose xyz-only copies 1b-2 draw); a short stage on a large dataset with
    # no later stage would encode clouds it never draws.
    prefill: bool = False
    prefill_batch: int = 32

    def __post_init__(self) -> None:
        if self.prefill_batch <= 0:
            raise ConfigError(f"cache.prefill_batch: must be > 0, got {self.prefill_batch}")


@dataclass
class LogConfig:
    every: int = 1  # metrics line every N steps
    tensorboard: bool = False


@dataclass
class TrainConfig:
    stage: str  # the stage, e.g. "stage2": its default trainable policy, and the output sub-folder
    run_name: str | None = None  # output sub-folder instead of the stage name (e.g. "stage2-seed1")
    # stage 0 is contrastive, stages 1-2 instruction tuning; "words" pre-aligns the projector (training/words.py)
    kind: Literal["contrastive", "instruct", "words"] = "instruct"
    init_from: str | None = None  # previous stage name (under the same --out) or a checkpoint folder; None = build
    preset: str = "cpu-small"  # model preset when building from scratch
    model_set: dict[str, Any] = field(default_factory=dict)  # model config overrides, dotted keys
    trainable: TrainableConfig | None = None  # None = STAGES[stage]; in a YAML, the parts that differ from it
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    words: WordsConfig = field(default_factory=WordsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 42
    # "bf16": forward passes under torch.autocast(bfloat16) (weights, gradients and optimizer state stay in their
    # own dtype, normally fp32); about twice as fast on CPUs with AVX512-BF16/AMX and on GPUs. "fp32": no autocast.
    # "auto": at start-up time a representative matmul in both on the run's device and take bf16 only where it is
    # clearly faster (training/precision.py); the choice is logged and kept in trainer_state.json.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    checkpoint_every: int = 50  # write a resumable checkpoint every N steps (and at the end)

    def __post_init__(self) -> None:
        if self.trainable is None:
            if self.stage not in STAGES:
                raise ConfigError(f"trainable: not given and {self.stage!r} is not a known stage ({', '.join(STAGES)})")
            self.trainable = dataclasses.replace(STAGES[self.stage])
        if self.checkpoint_every <= 0:
            raise ConfigError("checkpoint_every: must be > 0")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"precision: 'fp32', 'bf16' or 'auto', got {self.precision!r}")

    @property
    def name(self) -> str:
        """The run's output sub-folder under --out."""
        return self.run_name or self.stage

    def align_overrides(self, base: AlignConfig) -> AlignConfig:
        """The model's align config with this stage's loss settings applied."""
        return dataclasses.replace(
            base,
            enabled=self.loss.align,
            layer=self.loss.layer if self.loss.layer is not None else base.layer,
            weight=self.loss.weight if self.loss.weight is not None else base.weight,
            span=self.loss.span if self.loss.span is not None else base.span,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a stage YAML and apply ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = _mixture_as_list(apply_overrides(data, overrides or []))
    if isinstance(data.get("trainable"), dict) and data.get("stage") in STAGES:
        # the parts named under trainable change the stage's default policy; the others keep it
        data["trainable"] = {**dataclasses.asdict(STAGES[data["stage"]]), **data["trainable"]}
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _mixture_as_list(data: dict[str, Any]) -> dict[str, Any]:
    """Allow ``mixture: {brief: {batch_size: 9, ratio: 1}}`` (a mapping by name) as well as a list."""
    mixture = data.get("data", {}).get("mixture") if isinstance(data.get("data"), dict) else None
    if isinstance(mixture, dict):
        items = []
        for name, spec in mixture.items():
            if not isinstance(spec, dict):
                raise ConfigError(f"data.mixture.{name}: expected a mapping with batch_size and ratio")
            items.append({"name": name, **spec})
        data["data"]["mixture"] = items
    return data
