"""Configuration dataclasses: the one home of every default.

YAML files and ``key=value`` overrides only change these values; nothing else in the package repeats a default.
Every field is validated in ``__post_init__`` and a bad value raises ``ConfigError`` naming the field.

Presets (``PRESETS``): ``tiny`` (tests, seconds), ``cpu-small`` (SmolLM2-135M + MiniLM-initialised Q-Former, the
embedded default) and ``paper`` (the reference implementation's sizes; needs local Phi-2 and BERT folders).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from pointalign.errors import ConfigError


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value > 0, f"{type(obj).__name__}.{name}", f"must be > 0, got {value!r}")


@dataclass
class PointEncoderConfig:
    """Point-BERT-style encoder: (B, N, point_dims) -> (B, num_groups + 1, trans_dim)."""

    num_points: int = 8192  # points per cloud the data pipeline feeds the encoder
    point_dims: int = 6  # xyz + rgb
    num_groups: int = 512  # G: FPS centres, one token each
    group_size: int = 32  # k: neighbours per centre
    encoder_dims: int = 256  # width of the mini-PointNet group tokens
    tokenizer_widths: tuple[int, ...] = (128, 256, 512)  # mini-PointNet convs: F->w0->w1, then 2*w1->w2->encoder_dims
    trans_dim: int = 384  # C: transformer width
    depth: int = 12  # transformer blocks
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1  # stochastic depth, linspace 0 -> rate over the blocks
    fps_start: Literal["first", "random"] = "first"  # "first": deterministic FPS from point 0; "random" as reference
    checkpoint: str | None = None  # optional Point-BERT .pth/.safetensors to load (keys as REFERENCE_SPEC 1.2)

    def __post_init__(self) -> None:
        _positive(self, "num_points", "point_dims", "num_groups", "group_size", "encoder_dims", "trans_dim", "depth")
        _positive(self, "num_heads", "mlp_ratio")
        _check(self.point_dims >= 3, "PointEncoderConfig.point_dims", "must be >= 3 (xyz first)")
        _check(self.trans_dim % self.num_heads == 0, "PointEncoderConfig.trans_dim", "must be divisible by num_heads")
        _check(self.num_groups <= self.num_points, "PointEncoderConfig.num_groups", "must be <= num_points")
        _check(self.group_size <= self.num_points, "PointEncoderConfig.group_size", "must be <= num_points")
        _check(0.0 <= self.drop_path_rate < 1.0, "PointEncoderConfig.drop_path_rate", "must be in [0, 1)")
        _check(
            len(self.tokenizer_widths) == 3 and all(w > 0 for w in self.tokenizer_widths),
            "PointEncoderConfig.tokenizer_widths",
            f"needs three positive widths, got {self.tokenizer_widths!r}",
        )


@dataclass
class BridgeConfig:
    """MLP from point tokens to the Q-Former's cross-attention width (reference: 384 -> 768 -> GELU -> 1408)."""

    hidden: tuple[int, ...] = (768,)  # hidden widths; () = one Linear (reference pc_linear_layer 1), (768,) = 2 ...

    def __post_init__(self) -> None:
        _check(all(h > 0 for h in self.hidden), "BridgeConfig.hidden", f"widths must be > 0, got {self.hidden!r}")


@dataclass
class QFormerConfig:
    """BERT-layout Q-Former: Q learned queries cross-attending to the point tokens -> (B, Q, hidden_size)."""

    num_queries: int = 32  # Q: point tokens handed to the LLM
    hidden_size: int = 768  # Dq
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_freq: int = 2  # cross-attention in layers 0, f, 2f, ...
    encoder_width: int = 1408  # Dv: width of the point features the queries attend to (bridge output)
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # hidden and attention-probability dropout
    init_from: str | None = None  # "minilm" (packaged all-MiniLM-L6-v2) or a local Hugging Face BERT folder
    lora_r: int = 8  # Q-Former LoRA rank on query/key/value; 0 = no LoRA modules
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("query", "key", "value")

    def __post_init__(self) -> None:
        _positive(self, "num_queries", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        _positive(self, "cross_attention_freq", "encoder_width", "layer_norm_eps")
        _check(self.hidden_size % self.num_heads == 0, "QFormerConfig.hidden_size", "must be divisible by num_heads")
        _check(self.lora_r >= 0, "QFormerConfig.lora_r", "must be >= 0")
        _check(0.0 <= self.dropout < 1.0, "QFormerConfig.dropout", "must be in [0, 1)")
        _check(0.0 <= self.lora_dropout < 1.0, "QFormerConfig.lora_dropout", "must be in [0, 1)")


@dataclass
class QueryExpertsConfig:
    """MiniGPT-3D's mixture of query experts (its stage 4; models/query_experts.py). 1 expert = the plain Q-Former."""

    num_experts: int = 1  # E sets of queries; expert 0 is the Q-Former's own (reference: 8)
    router: Literal["sparse", "soft", "constant"] = "sparse"  # sparse: top_k by raw softmax; soft: all; constant: 1/E
    top_k: int = 2  # experts per sample of the sparse router
    router_hidden: int = 256  # width of the router MLP (hard-coded 256 in the reference)

    def __post_init__(self) -> None:
        _positive(self, "num_experts", "top_k", "router_hidden")
        _check(
            self.num_experts == 1 or self.router != "sparse" or self.top_k <= self.num_experts,
            "QueryExpertsConfig.top_k",
            f"{self.top_k} experts per sample out of {self.num_experts}",
        )


@dataclass
class ProjectorConfig:
    """Modality projector Dq -> hidden -> D_llm (reference: two Linears 768 -> 4096 -> 2560, no activation)."""

    hidden: int = 4096
    activation: Literal["none", "gelu"] = "none"
    # "free": the point tokens leave the Linears at whatever scale they learn (the reference). "text": each point token
    # is RMS-normalised and multiplied by a learned per-channel gain that starts at the RMS of the LLM's input
    # embeddings, so the point tokens enter the residual stream at the scale of the text tokens.
    output_scale: Literal["free", "text"] = "free"

    def __post_init__(self) -> None:
        _positive(self, "hidden")


@dataclass
class TinyLLMConfig:
    """Sizes of the random tiny Llama-family LLM used by the ``tiny`` preset (byte-level vocabulary)."""

    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048
    seed: int = 0  # initialisation seed of the random weights

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")
        _check(self.hidden_size % self.num_heads == 0, "TinyLLMConfig.hidden_size", "must be divisible by num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "TinyLLMConfig.num_heads", "must be divisible by num_kv_heads")


@dataclass
class LLMConfig:
    """The causal LM and its LoRA adapters."""

    source: str | None = "smollm2"  # "smollm2" (packaged GGUF), "tiny" (random), or a local Hugging Face folder
    # "auto": the class the folder's config.json names (transformers' AutoModelForCausalLM; plain Hugging Face Phi-2).
    # "tinygptv-phi": TinyGPT-V's modified Phi-2, the LLM of MiniGPT-3D and PointAlign, from a Phi-2 folder in either
    # layout (fused query_key_value or q/k/v_proj); its attention LoRA targets are query_key_value and dense.
    architecture: Literal["auto", "tinygptv-phi"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights of the frozen base model
    tiny: TinyLLMConfig = field(default_factory=TinyLLMConfig)
    lora_r: int = 64  # 0 = no LoRA modules
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention only, as the reference

    def __post_init__(self) -> None:
        _check(self.lora_r >= 0, "LLMConfig.lora_r", "must be >= 0")
        _check(0.0 <= self.lora_dropout < 1.0, "LLMConfig.lora_dropout", "must be in [0, 1)")
        _check(len(self.lora_targets) > 0 or self.lora_r == 0, "LLMConfig.lora_targets", "empty while lora_r > 0")
        _check(
            self.architecture == "auto" or self.source not in ("tiny", "smollm2"),
            "LLMConfig.architecture",
            f"{self.architecture!r} needs llm.source to be a local Phi-2 folder, got {self.source!r}",
        )
        split = [t for t in self.lora_targets if t in ("q_proj", "k_proj", "v_proj")]
        _check(
            self.architecture != "tinygptv-phi" or self.lora_r == 0 or not split,
            "LLMConfig.lora_targets",
            f"TinyGPT-V's Phi has one fused query_key_value, no {split}: use [query_key_value, dense] as the reference",
        )


@dataclass
class AlignConfig:
    """PointAlign's consistency loss: L = L_ntp + weight * mean(1 - cos(proj(h_layer[point positions]), q))."""

    enabled: bool = True  # off = the baseline (no alignment projector is built)
    layer: int = 15  # index into hidden_states: the output of decoder block `layer` (1-based); 0 = embeddings
    weight: float = 0.1  # lambda
    span: Literal["exact", "legacy"] = "exact"  # "legacy" reproduces the reference's shifted slice (ablation only)
    projector_hidden: int | None = None  # hidden width of the 3-layer projector; None = (D_llm + Dq) // 2

    def __post_init__(self) -> None:
        _check(self.layer >= 1, "AlignConfig.layer", f"must be >= 1 (output of a decoder block), got {self.layer}")
        _check(self.weight >= 0, "AlignConfig.weight", "must be >= 0")
        _check(self.projector_hidden is None or self.projector_hidden > 0, "AlignConfig.projector_hidden", "> 0")


@dataclass
class PromptConfig:
    """How point tokens and text are laid out; one builder uses this for training, evaluation, chat and demo."""

    # "chat": the tokenizer's chat template renders training and generation alike. "minigpt3d" / "pointalign": the
    # reference code's strings (data/prompts.py): generation prompts as its evaluation, "<s>[INST] <PC>...</PC>
    # <s>[INST] {question} [/INST]"; training as MiniGPT-3D's ("[INST] <PC>...</PC> {question}  [/INST]") or
    # PointAlign's (untemplated single turns), after an <|endoftext|> BOS token, each answer ending in end_symbol.
    style: Literal["chat", "minigpt3d", "pointalign"] = "chat"
    end_symbol: str = "###"  # reference styles: ends every training answer; generation stops there and is cut at it
    point_start: str = "<PC>"  # text right before the Q point tokens
    point_end: str = "</PC>"  # text right after them
    system_prompt: str | None = None  # None = whatever the chat template does without a system message
    chat_template: str | None = None  # Jinja template overriding the tokenizer's (required if it has none)
    max_length: int = 1024  # training sequences longer than this are an error, never silently cut

    def __post_init__(self) -> None:
        _positive(self, "max_length")
        _check(self.style == "chat" or bool(self.end_symbol), "PromptConfig.end_symbol", "empty in a reference style")


@dataclass
class GenerationConfig:
    """Decoding settings. The defaults are the reference evaluation's (beam 2 with sampling)."""

    max_new_tokens: int = 150
    min_new_tokens: int = 0
    num_beams: int = 2
    do_sample: bool = True
    temperature: float = 0.2
    top_p: float = 0.7
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    seed: int = 0  # sampling seed, set before each generate call

    def __post_init__(self) -> None:
        _positive(self, "max_new_tokens", "num_beams", "temperature", "repetition_penalty")
        _check(0 < self.top_p <= 1, "GenerationConfig.top_p", "must be in (0, 1]")
        _check(self.min_new_tokens >= 0, "GenerationConfig.min_new_tokens", "must be >= 0")

    @classmethod
    def greedy(cls, max_new_tokens: int = 150) -> GenerationConfig:
        """Deterministic decoding: one beam, no sampling."""
        return cls(max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)


@dataclass
class ModelConfig:
    """A whole PointAlign model."""

    preset: str = "custom"  # informational: which preset this started from
    seed: int = 0  # initialisation seed of every randomly initialised part
    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    experts: QueryExpertsConfig = field(default_factory=QueryExpertsConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        _check(
            self.llm.source is not None,
            "llm.source",
            "no LLM given: set llm.source=/path/to/a/local/hf/folder (the paper preset needs Phi-2, e.g. a local copy "
            "of microsoft/phi-2), or 'smollm2' / 'tiny'",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return from_dict(cls, data)


# ----------------------------------------------------------------------------------------------------------------
# Generic dict <-> dataclass conversion with key and type checking


def from_dict(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping; unknown keys and ill-typed values raise ``ConfigError``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"{full}: unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, full)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if path and not str(exc).startswith(path):
            raise ConfigError(f"{path}: {exc}") from None
        raise


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, name)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name}: expected a mapping with string keys, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML: numbers, booleans, null, lists) into (path, value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r}: empty key")
    return keys, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with ``key=value`` overrides applied (validation happens in from_dict)."""
    out = _deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {} if k not in node else node[k]
                if not isinstance(node[k], dict):
                    raise ConfigError(f"override {text!r}: {k} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return out


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_deepcopy(v) for v in data]
    return data


# ----------------------------------------------------------------------------------------------------------------
# Presets

_PAPER_CHAT_TEMPLATE = (
    # The reference's "[INST] {} [/INST]" wrapping (REFERENCE_SPEC 3), ending each answer with the eos string so
    # that generation stops by itself.
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}<|endoftext|>{% endif %}{% endfor %}"
)


def _tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        encoder=PointEncoderConfig(
            num_points=256, num_groups=16, group_size=8, encoder_dims=32, trans_dim=32, depth=2, num_heads=2
        ),
        bridge=BridgeConfig(hidden=(32,)),
        qformer=QFormerConfig(
            num_queries=4,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            encoder_width=48,
            lora_r=4,
            lora_alpha=8,
        ),
        projector=ProjectorConfig(hidden=64),
        llm=LLMConfig(source="tiny", lora_r=4, lora_alpha=8),
        align=AlignConfig(layer=2),
        prompt=PromptConfig(max_length=512),
    )


def _cpu_small() -> ModelConfig:
    # SmolLM2-135M has 30 blocks; block 14 sits where block 15 of Phi-2's 32 does (just under half-way).
    return ModelConfig(
        preset="cpu-small",
        encoder=PointEncoderConfig(
            num_points=2048,
            num_groups=64,
            group_size=32,
            encoder_dims=256,
            tokenizer_widths=(64, 128, 256),  # a third of Point-BERT's mini-PointNet cost, for a 2-core CPU
            trans_dim=256,
            depth=6,
            num_heads=4,
        ),
        bridge=BridgeConfig(hidden=(512,)),
        qformer=QFormerConfig(
            num_queries=32,
            hidden_size=384,
            num_layers=6,
            num_heads=12,
            intermediate_size=1536,
            cross_attention_freq=2,
            encoder_width=384,
            init_from="minilm",
        ),
        projector=ProjectorConfig(hidden=1024),
        llm=LLMConfig(
            source="smollm2",
            lora_r=16,
            lora_alpha=32,
            # No LoRA dropout: these short runs underfit, and dropout's masks cost a fifth of every LLM step on a CPU.
            lora_dropout=0.0,
            # The MLPs too: over the same 100 steps of stage 1b the caption loss ends at 0.71 against 0.96 (README).
            lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        ),
        align=AlignConfig(layer=14),
        # SmolLM2's template adds a 16-token default system prompt to every sequence when none is given; an empty one
        # keeps the template's shape and makes every LLM step about a sixth cheaper.
        prompt=PromptConfig(system_prompt="", max_length=768),
    )


def _paper() -> ModelConfig:
    # Sizes of REFERENCE_SPEC 1: Point-BERT 12 x 384, BERT-base Q-Former, Phi-2 with LoRA r64 on attention.
    return ModelConfig(
        preset="paper",
        encoder=PointEncoderConfig(),
        bridge=BridgeConfig(hidden=(768,)),
        qformer=QFormerConfig(init_from="bert-base"),
        projector=ProjectorConfig(hidden=4096),
        llm=LLMConfig(
            source="phi-2", dtype="bfloat16", lora_targets=("q_proj", "k_proj", "v_proj", "dense"), lora_r=64
        ),
        align=AlignConfig(layer=15, weight=0.1),
        prompt=PromptConfig(chat_template=_PAPER_CHAT_TEMPLATE, max_length=1024),
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": _tiny, "cpu-small": _cpu_small, "paper": _paper}


def preset(name: str, overrides: list[str] | None = None) -> ModelConfig:
    """The named preset with ``key=value`` overrides applied (e.g. ``llm.source=/models/phi-2``)."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r}: unknown (known: {', '.join(PRESETS)})")
    data = PRESETS[name]().to_dict()
    return ModelConfig.from_dict(apply_overrides(data, overrides or []))
