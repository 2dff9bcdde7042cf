"""The LLM-side weights of the released TinyGPT-V, MiniGPT-3D and PointAlign checkpoint files.

Those files are the reference runner's ``{"model": state_dict, "optimizer", "config", ...}``, read here with
``torch.load(weights_only=True)``, so no code in a file ever runs. Their LLM tensors (LoRA on ``query_key_value`` and
``dense``, and the norm weights: ``input_layernorm``, ``q_layernorm``, ``k_layernorm``, ``post_layernorm``,
``final_layernorm``) sit under ``llama_model.base_model.model.``, the peft-wrapped ``PhiForCausalLM`` of the reference.
The reference loads its files in order with ``strict=False``, so where several hold a key the last one wins
(KEYS.md §6: MiniGPT-3D evaluation = stage 3; PointAlign evaluation = pretrain, then finetune).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pointalign.errors import CheckpointError

LLM_PREFIX = "llama_model.base_model.model."  # the reference's peft-wrapped *ForCausalLM inside its state dict
_LORA = (".lora_A.", ".lora_B.")


def read_torch_file(path: str | Path) -> object:
    """A torch file read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing executed.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, holds pickled code or is not a torch file (one line each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain containers
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused, it holds more than tensors ({reason})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: unreadable as a torch checkpoint (truncated or another format): {first}"
        ) from None


def read_runner_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, object]]:
    """The ``"model"`` state dict of a reference runner checkpoint and its ``config["model"]`` (``{}`` if absent:
    TinyGPT-V's file has none). The LoRA alpha, which no weight holds, is ``config["model"]["lora_alpha"]``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: as ``read_torch_file``, or the file is not a runner checkpoint.
    """
    raw = read_torch_file(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise CheckpointError(f"{path}: not a MiniGPT-3D / TinyGPT-V / PointAlign checkpoint (no 'model' state dict)")
    config = raw.get("config")
    model_config = config.get("model") if isinstance(config, dict) else None
    return raw["model"], dict(model_config) if isinstance(model_config, dict) else {}


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``"model"`` state dict of a reference runner checkpoint (see ``read_runner_checkpoint``)."""
    return read_runner_checkpoint(path)[0]


def llm_state(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The LLM tensors of ``states`` (in load order; the last one holding a key wins), named as in the unwrapped
    ``*ForCausalLM`` plus peft's LoRA suffixes, e.g. ``model.layers.0.self_attn.query_key_value.lora_A.default.weight``
    or ``model.final_layernorm.weight``."""
    merged: dict[str, Tensor] = {}
    for state in states:
        merged.update({k[len(LLM_PREFIX) :]: v for k, v in state.items() if k.startswith(LLM_PREFIX)})
    return merged


def apply_llm_state(llm: nn.Module, state: Mapping[str, Tensor], lora_alpha: float) -> None:
    """Load ``llm_state`` tensors into ``llm`` in place.

    Norm weights are copied. LoRA pairs go into ``llm``'s peft adapters when it has them (their rank and scaling
    must match), and are otherwise merged into the base weights: ``W += (lora_alpha / r) * B @ A``, computed in fp32.

    Args:
        llm: TinyGPT-V's Phi, plain or wrapped by peft (``llm.apply_lora``).
        state: the output of ``llm_state``.
        lora_alpha: the reference's LoRA alpha (not stored in the weights; the rank r is ``lora_A``'s row count).

    Raises:
        CheckpointError: a key that is not a weight of ``llm``, a shape that does not fit, a LoRA A without its B.
    """
    core = llm.get_base_model() if callable(getattr(llm, "get_base_model", None)) else llm
    params = dict(core.named_parameters())
    modules = dict(core.named_modules())
    pairs: dict[str, dict[str, Tensor]] = {}  # module path -> {"A": (r, in), "B": (out, r)}
    with torch.no_grad():
        for key, value in state.items():
            lora = next((m for m in _LORA if m in key), None)
            if lora is not None and key not in params:  # no peft adapter to hold it: merge below
                module, rest = key.split(lora, 1)
                if rest != "default.weight":
                    raise CheckpointError(f"{key}: only the reference's single adapter 'default' is supported")
                pairs.setdefault(module, {})[lora[-2]] = value
                continue
            if key not in params:
                raise CheckpointError(f"{key}: not a weight of {type(core).__name__}")
            _copy_checked(params[key], value, key)
            if lora == ".lora_A.":
                _check_scaling(modules[key.split(lora, 1)[0]], value.shape[0], lora_alpha, key)
        for module, pair in pairs.items():
            if set(pair) != {"A", "B"}:
                raise CheckpointError(f"{module}: LoRA {''.join(sorted(pair))} without its partner")
            a, b = pair["A"].float(), pair["B"].float()  # (r, in), (out, r)
            if f"{module}.weight" not in params:
                raise CheckpointError(f"{module}: LoRA on a module that {type(core).__name__} does not have")
            weight = params[f"{module}.weight"]
            if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(weight.shape):
                raise CheckpointError(
                    f"{module}: LoRA B {tuple(b.shape)} @ A {tuple(a.shape)} does not fit the weight "
                    f"{tuple(weight.shape)}"
                )
            weight.copy_((weight.float() + (lora_alpha / a.shape[0]) * (b @ a)).to(weight.dtype))


def _copy_checked(target: Tensor, value: Tensor, key: str) -> None:
    if tuple(value.shape) != tuple(target.shape):
        raise CheckpointError(f"{key}: shape {tuple(value.shape)} does not fit the model's {tuple(target.shape)}")
    target.copy_(value)


def _check_scaling(module: nn.Module, rank: int, lora_alpha: float, key: str) -> None:
    """A peft LoRA layer's scaling must be the reference's lora_alpha / r."""
    scaling = getattr(module, "scaling", {}).get("default")
    if scaling is not None and abs(scaling - lora_alpha / rank) > 1e-12:
        raise CheckpointError(
            f"{key}: the model's LoRA scaling is {scaling}, the checkpoint's is lora_alpha / r = {lora_alpha}/{rank}"
        )
