"""What trains in each stage: a per-part policy applied by one function.

Modes: ``frozen`` (nothing), ``full`` (every parameter), ``lora`` (the LoRA adapters), ``norms`` (the weights of
normalisation layers), ``lora+norms`` (both). Parts: point_encoder, bridge, qformer (without its queries),
query_tokens, query_experts, projector, llm, align_projector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pointalign.errors import ConfigError

PartMode = Literal["frozen", "full", "lora", "norms", "lora+norms"]
PARTS = ("point_encoder", "bridge", "qformer", "query_tokens", "query_experts", "projector", "llm", "align_projector")


@dataclass
class TrainableConfig:
    """Per-part training mode."""

    point_encoder: PartMode = "frozen"
    bridge: PartMode = "frozen"
    qformer: PartMode = "frozen"  # the Q-Former except its learned queries
    query_tokens: Literal["frozen", "full"] = "frozen"
    query_experts: Literal["frozen", "full"] = "frozen"  # the other experts' queries and the router (experts > 1)
    projector: PartMode = "frozen"
    llm: PartMode = "frozen"
    align_projector: Literal["frozen", "full"] = "frozen"


_BRIDGE_AND_LLM = dict(bridge="full", qformer="lora+norms", query_tokens="full", projector="full", llm="lora+norms")

# MiniGPT-3D's stages 1-3 (1a-1c) and PointAlign's stage 2 (REFERENCE_SPEC 4); stage 0 pretrains the encoder.
STAGES: dict[str, TrainableConfig] = {
    "stage0": TrainableConfig(point_encoder="full"),
    "stage1a": TrainableConfig(bridge="full"),
    "stage1b": TrainableConfig(**_BRIDGE_AND_LLM),
    "stage1c": TrainableConfig(**_BRIDGE_AND_LLM),
    "stage2": TrainableConfig(llm="lora+norms", align_projector="full"),
    # MiniGPT-3D's stage 4: the query experts (expert 0 is the Q-Former's own queries) and the router
    "stage4": TrainableConfig(query_tokens="full", query_experts="full"),
    "stage2-baseline": TrainableConfig(llm="lora+norms"),
    "inference": TrainableConfig(),
}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("Norm")


def _selected(part: nn.Module, mode: str, skip: tuple[str, ...] = ()) -> list[nn.Parameter]:
    if mode == "frozen":
        return []
    params: dict[int, nn.Parameter] = {}
    if mode == "full":
        params = {id(p): p for n, p in part.named_parameters() if not n.startswith(skip)}
    if "lora" in mode:
        lora = {id(p): p for n, p in part.named_parameters() if "lora_" in n}
        if not lora:
            raise ConfigError(f"mode {mode!r} but the part has no LoRA modules (set its lora_r > 0)")
        params.update(lora)
    if "norms" in mode:
        for module in part.modules():
            if _is_norm(module) and getattr(module, "weight", None) is not None:
                params[id(module.weight)] = module.weight
    return list(params.values())


def apply_trainable(model: nn.Module, policy: TrainableConfig) -> None:
    """Set ``requires_grad`` on exactly the parameters ``policy`` names; parts with nothing to train stay in eval.

    A trainable parameter held in a 16-bit dtype (the LoRA adapters and norms of an LLM loaded in bf16 or fp16) is
    made fp32, as the reference makes its LLM's norms: its updates would otherwise round away. Such a model runs
    under autocast (``training.precision.for_llm_dtype``)."""
    for p in model.parameters():
        p.requires_grad_(False)
    eval_parts: set[str] = set()
    for name in PARTS:
        mode = getattr(policy, name)
        if name == "query_tokens":
            params = [model.qformer.query_tokens] if mode == "full" else []
        else:
            part = getattr(model, name)
            if part is None:
                if mode != "frozen":
                    raise ConfigError(f"trainable.{name}={mode!r} but the model has no {name} (align.enabled?)")
                continue
            try:
                params = _selected(part, mode, skip=("query_tokens",) if name == "qformer" else ())
            except ConfigError as exc:
                raise ConfigError(f"trainable.{name}: {exc}") from None
            if not params:
                eval_parts.add(name)
        for p in params:
            p.requires_grad_(True)
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
    model.eval_parts = eval_parts
    model.train(model.training)


def parameter_summary(model: nn.Module) -> list[tuple[str, int, int]]:
    """(part, parameters, trainable parameters) per part, LoRA counted with its part."""
    rows = []
    for name in PARTS:
        if name == "query_tokens":
            continue
        part = getattr(model, name)
        if part is None:
            rows.append((name, 0, 0))
            continue
        seen: dict[int, nn.Parameter] = {id(p): p for p in part.parameters()}
        total = sum(p.numel() for p in seen.values())
        train = sum(p.numel() for p in seen.values() if p.requires_grad)
        rows.append((name, total, train))
    return rows
