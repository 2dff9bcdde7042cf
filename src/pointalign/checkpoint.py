"""Checkpoint folders: ``model.safetensors`` + ``config.yaml`` (the resolved model config and what the file holds).

A checkpoint holds either the trainable tensors of a run (``what="trainable"``, with ``parent`` naming the checkpoint
the run started from) or every tensor not reloadable from the LLM's own source (``what="full"``). A save
``for_inference`` drops the alignment projector, and ``load_model(..., for_inference=True)`` never builds it.
Files are written to a temporary folder and renamed, so a folder is complete or absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from pointalign import __version__
from pointalign.config import ModelConfig
from pointalign.errors import CheckpointError
from pointalign.models.builders import build_model
from pointalign.models.llm import merge_lora
from pointalign.models.pointalign import PointAlignModel

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
ALIGN_PREFIX = "align_projector."


def _llm_base_names(model: PointAlignModel) -> set[str]:
    """Names of LLM tensors that reload from the LLM source (every LLM tensor except LoRA adapters)."""
    return {f"llm.{n}" for n, _ in model.llm.named_parameters() if "lora_" not in n}


def collect_state(
    model: PointAlignModel,
    what: Literal["trainable", "full"],
    for_inference: bool = False,
    llm_keep: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores (see the module docstring). ``llm_keep`` names LLM base tensors that a full
    save keeps although the LLM has them: those an import took from files other than the LLM's own folder."""
    if what == "trainable":
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        # Buffers (BatchNorm statistics) of every module that trains whole.
        for mname, module in model.named_modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                keep |= {f"{mname}.{b}" if mname else b for b, _ in module.named_buffers(recurse=False)}
    elif what == "full":
        # A random "tiny" LLM is not reloadable from anywhere, so a full save keeps it.
        skip = set() if model.config is not None and model.config.llm.source == "tiny" else _llm_base_names(model)
        skip -= set(llm_keep)
        keep = {n for n in model.state_dict() if n not in skip}
    else:
        raise ValueError(f"what must be 'trainable' or 'full', got {what!r}")
    state = model.state_dict()
    out = {}
    for name in sorted(keep):
        if for_inference and name.startswith(ALIGN_PREFIX):
            continue
        if name in state:
            out[name] = state[name].detach().to("cpu").contiguous().clone()
    return out


def save_checkpoint(
    model: PointAlignModel,
    out_dir: str | Path,
    config: ModelConfig,
    *,
    what: Literal["trainable", "full"] = "trainable",
    for_inference: bool = False,
    parent: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    llm_keep: Collection[str] = (),
) -> Path:
    """Write a checkpoint folder atomically; an existing folder is replaced only once the new one is complete."""
    out_dir = Path(out_dir)
    if parent is not None and not (Path(parent) / CONFIG).is_file():
        raise FileNotFoundError(f"parent checkpoint {parent}: no {CONFIG}")
    state = collect_state(model, what, for_inference, llm_keep)
    meta = {
        "model": config.to_dict(),
        "checkpoint": {
            "what": what,
            "for_inference": for_inference,
            "parent": str(Path(parent).resolve()) if parent is not None else None,
            "pointalign_version": __version__,
            **(extra or {}),
        },
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "what": what})
        (tmp / CONFIG).write_text(yaml.safe_dump(_plain(meta), sort_keys=False))
        if write_extra is not None:  # more files that must appear together with the weights (trainer state)
            write_extra(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: not a pointalign checkpoint (needs {CONFIG} and {WEIGHTS})")
    meta = yaml.safe_load((path / CONFIG).read_text())
    if not isinstance(meta, dict) or "model" not in meta or "checkpoint" not in meta:
        raise CheckpointError(f"{path / CONFIG}: malformed checkpoint config (needs 'model' and 'checkpoint')")
    return meta


def checkpoint_chain(path: str | Path) -> list[Path]:
    """The checkpoint and its parents, oldest first."""
    chain: list[Path] = []
    current: Path | None = Path(path)
    while current is not None:
        if current.resolve() in {c.resolve() for c in chain}:
            raise CheckpointError(f"{path}: checkpoint parents form a cycle")
        chain.append(current)
        parent = read_checkpoint_meta(current)["checkpoint"].get("parent")
        current = Path(parent) if parent else None
    return chain[::-1]


def load_state_into(model: nn.Module, path: str | Path, *, for_inference: bool = False) -> list[str]:
    """Load a checkpoint's tensors; unknown names are an error. Returns the loaded names."""
    state = load_file(str(Path(path) / WEIGHTS))
    if for_inference:
        state = {k: v for k, v in state.items() if not k.startswith(ALIGN_PREFIX)}
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CheckpointError(f"{path}: tensors the model does not have: {unexpected[:5]}")
    wrong = [k for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: shape mismatch for {wrong[:5]}")
    model.load_state_dict(state, strict=False)
    return list(state)


def load_model(path: str | Path, *, for_inference: bool = True) -> tuple[PointAlignModel, ModelConfig]:
    """Build the model a checkpoint describes and load it and its parents' tensors.

    With ``for_inference`` the alignment projector is never built and its tensors are skipped, and the LLM's LoRA
    adapters are merged into its fp32 base weights (``llm.merge_lora``: the same outputs, faster).
    """
    chain = checkpoint_chain(path)
    config = ModelConfig.from_dict(read_checkpoint_meta(chain[-1])["model"])
    model = build_model(config, for_inference=for_inference)
    for ckpt in chain:
        load_state_into(model, ckpt, for_inference=for_inference)
    if for_inference:
        model.llm = merge_lora(model.llm)
    model.eval()
    return model, config
