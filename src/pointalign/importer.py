"""``pointalign import minigpt3d``: the released MiniGPT-3D / PointAlign files as a pointalign checkpoint folder.

The files and what each supplies (KEYS.md of the reference fixture, §1-7):
    - ``--llm``: a Phi-2 folder in either layout; its base weights are read at load time and never copied.
    - ``--point-encoder``: ULIP-2's Point-BERT (``{"base_model": ...}``).
    - ``--qformer``: BLIP-2's Q-Former (``{"model": {"Qformer.bert.*", "query_tokens", ...}}``).
    - ``--checkpoint`` (repeatable): runner checkpoints (``{"model", "optimizer", "config", ...}``), in the reference's
      order ``ckpt`` then ``second_ckpt``: MiniGPT-3D stage 3 (then stage 4, its query experts and router), or
      PointAlign pretrain then finetune. Their ``config["model"]`` gives what no weight holds: the LLM's LoRA alpha
      and the experts' router type and top-k.

Every file is read with ``torch.load(weights_only=True)``. The files apply in that order and where several hold a
tensor the last one wins, as the reference's ``load_state_dict(strict=False)`` calls do. Every size the weights fix is
read from their shapes; the rest (group count and size, head counts, the alignment layer, dtype) comes from the
``paper`` preset or ``--set``. Every tensor of the model must come from some file, except the q/k LayerNorm biases of
TinyGPT-V's Phi (zeros in the reference too), LoRA adapters that no file holds (fresh, so the identity), and the
parts named by ``fresh``: the start of MiniGPT-3D's stage 1 (Phi-2, Point-BERT, BLIP-2 and TinyGPT-V's stage-3
checkpoint) has no point->Q-Former MLP, which that stage trains from a random init (seeded here). Any other missing
part, misfit shape or foreign key is an error naming the keys, raised before anything is written.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pointalign.config import ModelConfig, apply_overrides, preset
from pointalign.errors import CheckpointError, ConfigError
from pointalign.models.point_encoder import read_point_bert_state
from pointalign.models.released import LLM_PREFIX, apply_llm_state, read_runner_checkpoint, read_torch_file

# reference key prefix -> ours, for the runner checkpoints (KEYS.md §5) and BLIP-2's file (§2)
_RUNNER_NAMES = (
    ("query_tokens", "qformer.query_tokens"),
    ("point_2_Qformer_proj.", "bridge.net."),
    ("Qformer.bert.", "qformer."),
    ("llama_proj.", "projector.fc1."),
    ("llama_proj2.", "projector.fc2."),
    ("pc_encoder.", "point_encoder."),
    ("point_encoder.", "point_encoder."),  # the runner's second registration of the same Point-BERT (fp16 Linears)
    ("alignment_projector.projector.", "align_projector.net."),
    ("query_expert_dict.0", "qformer.query_tokens"),  # expert 0 is the Q-Former's queries (the same Parameter)
    ("query_expert_dict.", "query_experts.experts."),
    ("query_router.", "query_experts.router."),
)
_BLIP2_NAMES = (("query_tokens", "qformer.query_tokens"), ("Qformer.bert.", "qformer."))
# BERT's text-side tensors (the Q-Former has no text input), BLIP-2's vision LayerNorm and T5 projection
_IGNORED = re.compile(
    r"Qformer\.bert\.embeddings\.(position_ids|word_embeddings\..*|position_embeddings\..*)"
    r"|Qformer\.cls\..*|Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\..*|ln_vision\..*|t5_proj\..*"
)
# the runner config's query_expert_router_type -> QueryExpertsConfig.router
_ROUTERS = {"Sparse Router": "sparse", "Soft Router": "soft", "Constant Router": "constant"}
_POINT_BERT = re.compile(r"(cls_token|cls_pos|(encoder|reduce_dim|pos_embed|blocks\.blocks|norm)\..*)")
_QK_BIAS = re.compile(r"model\.layers\.\d+\.self_attn\.[qk]_layernorm\.bias")
_FROM_FILES = re.compile(r"model\.layers\.\d+\.(self_attn\.[qk]_layernorm\.weight|post_layernorm\.weight)")
QFORMER_LORA_ALPHA_PER_RANK = 2  # the reference injects the Q-Former's LoRA with alpha = 2 r, whatever its config
FRESH_PARTS = {"bridge": "point->Q-Former MLP"}  # parts an import may leave to a seeded random init (``fresh``)
FRESH_SEED = 0  # the torch seed of those inits


@dataclass
class Supplied:
    """A tensor and where it came from."""

    tensor: Tensor
    file: str  # the file's name as shown in reports
    key: str  # its key in that file


@dataclass
class ImportResult:
    out: Path
    config: ModelConfig
    report: list[str]  # one line per part: which file supplied it


def import_minigpt3d(
    llm: str | Path,
    point_encoder: str | Path,
    qformer: str | Path,
    checkpoints: Sequence[str | Path],
    out: str | Path,
    overrides: Sequence[str] = (),
    fresh: Sequence[str] = (),
) -> ImportResult:
    """Read the released files, build the model they describe and write it as a checkpoint folder at ``out``.

    ``fresh`` names parts (``FRESH_PARTS``) that no file supplies and that start from a seeded random init, for a
    stage to train: ``("bridge",)`` with TinyGPT-V's checkpoint gives the model MiniGPT-3D's stage 1 starts from.

    Raises:
        FileNotFoundError: a file or the Phi-2 folder is missing.
        FileExistsError: ``out`` exists (an import never overwrites).
        CheckpointError: an unreadable file, a file of another model, a part no file supplies or a misfit shape.
        ConfigError: a bad ``--set``, or sizes the preset cannot take (the message names the field to set).
    """
    from pointalign.checkpoint import save_checkpoint
    from pointalign.models.builders import build_model

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out} exists; an import writes a new folder and never overwrites one")
    folder = Path(llm).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--llm {llm}: no config.json there (expected a Phi-2 folder)")
    if not checkpoints:
        raise ConfigError("--checkpoint: give at least one MiniGPT-3D / PointAlign checkpoint")
    unknown = [p for p in fresh if p not in FRESH_PARTS]
    if unknown:
        raise ConfigError(
            f"--fresh {unknown[0]}: not a part an import can start fresh (known: {', '.join(FRESH_PARTS)})"
        )
    parts: dict[str, Supplied] = {}  # our tensor name -> its last supplier
    llm_parts: dict[str, Supplied] = {}  # the LLM's own names (``llm_state``) -> its last supplier
    parts.update(_point_bert_tensors(Path(point_encoder)))
    parts.update(_blip2_tensors(Path(qformer)))
    settings: dict[str, object] = {}  # what the runner configs say and no weight holds
    for path in map(Path, checkpoints):
        found, found_llm, runner_config = _runner_tensors(path)
        parts.update(found)
        llm_parts.update(found_llm)
        settings |= _runner_settings(path, runner_config, found, found_llm)
    for part in fresh:
        supplied = next((sup for name, sup in parts.items() if name.startswith(f"{part}.")), None)
        if supplied is not None:
            raise CheckpointError(
                f"--fresh {part}: {supplied.file} supplies the {FRESH_PARTS[part]} ({supplied.key}); "
                f"drop --fresh {part} to use it"
            )
    sizes = {**infer_sizes(parts, llm_parts, fresh), **settings}
    # PointAlign's files (an alignment projector) were trained on its untemplated strings, MiniGPT-3D's on templated
    style = "pointalign" if "align_projector.net.0.weight" in parts else "minigpt3d"
    cfg = _config(folder, sizes, style, overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FRESH_SEED)  # the fresh parts' init (and the fresh LoRA's A) do not depend on the caller
        model = build_model(cfg)  # the one copy of Phi-2, read tensor by tensor
    own = model.state_dict()
    state, final = _match(parts, own, cfg, fresh)
    core = model.llm.get_base_model() if callable(getattr(model.llm, "get_base_model", None)) else model.llm
    _check_llm(llm_parts, core)
    for name, param in core.named_parameters():  # the files' LoRA and norm weights keep fp32 whatever llm.dtype is
        if (name in llm_parts or ".lora_" in name) and param.is_floating_point():
            param.data = param.data.float()
    model.load_state_dict(state, strict=False)  # copies (fp16 stage-file tensors become the model's dtype)
    try:
        apply_llm_state(model.llm, {k: s.tensor for k, s in llm_parts.items()}, cfg.llm.lora_alpha)
    except CheckpointError as exc:
        raise CheckpointError(f"the LLM tensors of the checkpoints: {exc}") from None
    llm_prefix = "llm.base_model.model." if core is not model.llm else "llm."
    kept = {llm_prefix + k for k in llm_parts if ".lora_" not in k}
    report = _report(final, llm_parts, folder, cfg, fresh)
    meta = {"imported": {"kind": "minigpt3d", "report": report}}
    save_checkpoint(model, out, cfg, what="full", llm_keep=kept, extra=meta)
    return ImportResult(out=out, config=cfg, report=report)


# ---------------------------------------------------------------------------------------------------------------
# Reading: every key of a file is either mapped, deliberately ignored, or an error


def _point_bert_tensors(path: Path) -> dict[str, Supplied]:
    state = read_point_bert_state(path)
    foreign = [k for k in state if not _POINT_BERT.fullmatch(k)]
    if foreign or not state:
        raise CheckpointError(f"{path}: not a Point-BERT checkpoint; keys of another model: {foreign[:5]}")
    return {f"point_encoder.{k}": Supplied(v, path.name, k) for k, v in state.items()}


def _blip2_tensors(path: Path) -> dict[str, Supplied]:
    raw = read_torch_file(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise CheckpointError(f"{path}: not BLIP-2's Q-Former checkpoint (no 'model' state dict)")
    found, foreign = _rename(raw["model"], _BLIP2_NAMES, path.name)
    if foreign or "qformer.query_tokens" not in found:
        raise CheckpointError(f"{path}: not BLIP-2's Q-Former checkpoint; keys of another model: {foreign[:5]}")
    return found


def _runner_tensors(path: Path) -> tuple[dict[str, Supplied], dict[str, Supplied], dict[str, object]]:
    state, runner_config = read_runner_checkpoint(path)
    llm = {k[len(LLM_PREFIX) :]: Supplied(v, path.name, k) for k, v in state.items() if k.startswith(LLM_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(LLM_PREFIX)}
    found, foreign = _rename(rest, _RUNNER_NAMES, path.name)
    if foreign or not (found or llm):
        raise CheckpointError(f"{path}: not a MiniGPT-3D / PointAlign checkpoint; keys of another model: {foreign[:5]}")
    return found, llm, runner_config


def _runner_settings(
    path: Path, runner_config: Mapping[str, object], found: Mapping[str, Supplied], llm: Mapping[str, Supplied]
) -> dict[str, object]:
    """The LLM LoRA alpha and the experts' router, from the runner config of the file that holds their weights."""
    settings: dict[str, object] = {}
    if any(".lora_" in k for k in llm) and "lora_alpha" in runner_config:
        settings["llm.lora_alpha"] = runner_config["lora_alpha"]
    if any(k.startswith("query_experts.router.") for k in found):
        router = runner_config.get("query_expert_router_type", "Sparse Router")
        if router not in _ROUTERS:
            raise CheckpointError(f"{path}: query_expert_router_type {router!r} is none of {', '.join(_ROUTERS)}")
        settings["experts.router"] = _ROUTERS[str(router)]
        if "query_expert_top_k" in runner_config:
            settings["experts.top_k"] = runner_config["query_expert_top_k"]
    return settings


def _rename(
    state: Mapping[str, Tensor], names: Sequence[tuple[str, str]], file: str
) -> tuple[dict[str, Supplied], list[str]]:
    found: dict[str, Supplied] = {}
    foreign: list[str] = []
    for key, value in state.items():
        if _IGNORED.fullmatch(key):
            continue
        ours = next(
            (new + key[len(old) :] for old, new in names if key == old or (old[-1] == "." and key.startswith(old))),
            None,
        )
        if ours is None or not isinstance(value, Tensor):
            foreign.append(key)
        else:
            found[ours] = Supplied(value, file, key)
    return found, foreign


# ---------------------------------------------------------------------------------------------------------------
# Sizes from shapes


def infer_sizes(
    parts: Mapping[str, Supplied], llm: Mapping[str, Supplied], fresh: Sequence[str] = ()
) -> dict[str, object]:
    """Every config size the tensors fix, as dotted ``ModelConfig`` keys (a ``fresh`` part's sizes come from the
    preset or ``--set``, and what it connects to).

    Raises:
        CheckpointError: a tensor a size is read from is in no file (naming the part and the key).
    """

    def shape(name: str, part: str) -> tuple[int, ...]:
        if name not in parts:
            raise CheckpointError(f"no file supplies the {part} ({_reference_name(name)})")
        return tuple(parts[name].tensor.shape)

    def indices(pattern: str) -> list[int]:
        return sorted({int(m.group(1)) for k in parts if (m := re.fullmatch(pattern, k))})

    enc = "point_encoder."
    trans_dim = shape(enc + "cls_token", "point encoder")[-1]
    depth = len(indices(r"point_encoder\.blocks\.blocks\.(\d+)\..*"))
    sizes: dict[str, object] = {
        "encoder.trans_dim": trans_dim,
        "encoder.depth": depth,
        "encoder.point_dims": shape(enc + "encoder.first_conv.0.weight", "point encoder")[1],
        "encoder.encoder_dims": shape(enc + "reduce_dim.weight", "point encoder")[1],
        "encoder.tokenizer_widths": [
            shape(enc + "encoder.first_conv.0.weight", "point encoder")[0],
            shape(enc + "encoder.first_conv.3.weight", "point encoder")[0],
            shape(enc + "encoder.second_conv.0.weight", "point encoder")[0],
        ],
        "encoder.mlp_ratio": shape(enc + "blocks.blocks.0.mlp.fc1.weight", "point encoder")[0] / trans_dim,
    }
    if "bridge" not in fresh:
        linears = indices(r"bridge\.net\.(\d+)\.weight") or [shape("bridge.net.0.weight", "point->Q-Former MLP")]
        sizes["bridge.hidden"] = [shape(f"bridge.net.{i}.weight", "MLP")[0] for i in linears[:-1]]
    num_queries, hidden = shape("qformer.query_tokens", "query tokens")[1:]
    layers = indices(r"qformer\.encoder\.layer\.(\d+)\..*")
    cross = indices(r"qformer\.encoder\.layer\.(\d+)\.crossattention\..*")
    q = "qformer.encoder.layer.0."
    sizes |= {
        "qformer.num_queries": num_queries,
        "qformer.hidden_size": hidden,
        "qformer.num_layers": len(layers),
        "qformer.intermediate_size": shape(q + "intermediate_query.dense.weight", "Q-Former")[0],
        "qformer.encoder_width": shape(q + "crossattention.self.key.weight", "Q-Former cross-attention")[1],
        "qformer.cross_attention_freq": _cross_attention_freq(cross, len(layers)),
    }
    if layers != list(range(len(layers))):
        raise CheckpointError(f"the Q-Former's layers are not numbered 0..n-1: {layers}")
    lora_a = [k for k in parts if k.startswith("qformer.") and ".lora_A." in k]
    if lora_a:
        rank = int(parts[lora_a[0]].tensor.shape[0])
        targets = list(dict.fromkeys(k.split(".lora_A.")[0].rsplit(".", 1)[1] for k in lora_a))
        sizes |= {
            "qformer.lora_r": rank,
            "qformer.lora_alpha": QFORMER_LORA_ALPHA_PER_RANK * rank,
            "qformer.lora_targets": targets,
        }
    sizes["projector.hidden"] = shape("projector.fc1.weight", "projector")[0]
    sizes["experts.num_experts"] = 1
    if "query_experts.router.2.weight" in parts:
        sizes["experts.num_experts"] = shape("query_experts.router.2.weight", "router")[0]
        sizes["experts.router_hidden"] = shape("query_experts.router.0.weight", "router")[0]
    llm_a = sorted(k for k in llm if ".lora_A." in k)
    if llm_a:
        sizes["llm.lora_r"] = int(llm[llm_a[0]].tensor.shape[0])
    if "align_projector.net.0.weight" in parts:
        sizes |= {"align.enabled": True, "align.projector_hidden": shape("align_projector.net.0.weight", "")[0]}
    else:
        sizes["align.enabled"] = False
    return sizes


def _reference_name(ours: str) -> str:
    """The reference's name of one of our tensors (as a runner checkpoint names it)."""
    return next((old + ours[len(new) :] for old, new in _RUNNER_NAMES if ours.startswith(new)), ours)


def _cross_attention_freq(cross: list[int], num_layers: int) -> int:
    """f such that layers 0, f, 2f, ... and only those have cross-attention (one such layer: f = num_layers)."""
    if not cross:
        raise CheckpointError(
            "no file supplies the Q-Former's cross-attention (Qformer.bert.encoder.layer.0.crossattention.*)"
        )
    freq = cross[1] - cross[0] if len(cross) > 1 else num_layers
    if list(range(0, num_layers, freq)) != cross:
        raise CheckpointError(f"the Q-Former has cross-attention in layers {cross}, not every f-th from layer 0")
    return freq


def _config(folder: Path, sizes: Mapping[str, object], style: str, overrides: Sequence[str]) -> ModelConfig:
    fixed = {
        "prompt.style": style,
        "llm.source": str(folder),
        "llm.architecture": "tinygptv-phi",
        "llm.lora_targets": ["query_key_value", "dense"],
        "qformer.init_from": None,  # the weights come from the files
        "encoder.checkpoint": None,
        "projector.activation": "none",
    }
    given = [f"{k}={json.dumps(v)}" for k, v in {**fixed, **sizes}.items()]
    data = apply_overrides(preset("paper").to_dict(), given)
    try:
        return ModelConfig.from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as exc:
        inferred = ", ".join(f"{k}={v}" for k, v in sizes.items() if k.split(".")[0] in str(exc).lower())
        raise ConfigError(
            f"{exc} (read from the weights: {inferred or 'see --help'}; set the rest with --set)"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Matching to the model


def _match(
    parts: Mapping[str, Supplied], own: Mapping[str, Tensor], cfg: ModelConfig, fresh: Sequence[str] = ()
) -> tuple[dict[str, Tensor], dict[str, Supplied]]:
    """The tensors to load under the model's names (a Linear that carries LoRA is ``<name>.base_layer``)."""
    state: dict[str, Tensor] = {}
    final: dict[str, Supplied] = {}
    unknown: list[str] = []
    wrong: list[str] = []
    for name, sup in parts.items():
        target = name if name in own else _base_layer(name)
        if target not in own:
            unknown.append(f"{sup.file}: {sup.key}")
        elif tuple(sup.tensor.shape) != tuple(own[target].shape):
            wrong.append(f"{sup.file}: {sup.key} {tuple(sup.tensor.shape)} vs {tuple(own[target].shape)}")
        else:
            state[target] = sup.tensor
            final[target] = sup
    if unknown:
        raise CheckpointError(f"tensors the model has no place for: {unknown[:6]}")
    if wrong:
        raise CheckpointError(f"shapes that do not fit the model (file vs model): {wrong[:6]}")
    fresh_lora = not any(".lora_" in n for n in state)
    missing = [
        n
        for n in own
        if n not in state
        and not n.startswith("llm.")
        and not (fresh_lora and n.startswith("qformer.") and ".lora_" in n)
        and not n.startswith(tuple(f"{part}." for part in fresh))
    ]
    if missing:
        raise CheckpointError(f"no file supplies {len(missing)} tensors of the model: {missing[:6]}")
    return state, final


def _base_layer(name: str) -> str:
    module, leaf = name.rsplit(".", 1)
    return f"{module}.base_layer.{leaf}"


def _check_llm(llm: Mapping[str, Supplied], core) -> None:
    """The LLM tensors no Phi-2 folder holds must come from the checkpoints (LoRA: all or none)."""
    names = [n for n, _ in core.named_parameters()]
    missing = [n for n in names if _FROM_FILES.fullmatch(n) and n not in llm]
    lora = [n for n in names if ".lora_" in n]
    if any(".lora_" in k for k in llm):
        missing += [n for n in lora if n not in llm]
    if missing:
        raise CheckpointError(f"no checkpoint supplies {len(missing)} LLM tensors: {missing[:6]}")


# ---------------------------------------------------------------------------------------------------------------
# Report

_PARTS: tuple[tuple[str, Callable[[str], bool]], ...] = (  # (label, test on our tensor name), first match wins
    ("point encoder", lambda n: n.startswith("point_encoder.")),
    ("point->Q-Former MLP", lambda n: n.startswith("bridge.")),
    ("query tokens", lambda n: n == "qformer.query_tokens"),
    ("query experts", lambda n: n.startswith("query_experts.")),
    ("Q-Former LoRA", lambda n: n.startswith("qformer.") and ".lora_" in n),
    ("Q-Former", lambda n: n.startswith("qformer.")),
    ("projector", lambda n: n.startswith("projector.")),
    ("alignment projector", lambda n: n.startswith("align_projector.")),
    ("LLM LoRA", lambda n: n.startswith("llm.") and ".lora_" in n),
    ("LLM norms", lambda n: n.startswith("llm.")),
)


def _report(
    final: Mapping[str, Supplied],
    llm: Mapping[str, Supplied],
    folder: Path,
    cfg: ModelConfig,
    fresh: Sequence[str] = (),
) -> list[str]:
    counts: dict[str, Counter[str]] = {}
    for name, sup in [*final.items(), *((f"llm.{k}", s) for k, s in llm.items())]:
        part = next(label for label, match in _PARTS if match(name))
        counts.setdefault(part, Counter())[sup.file] += 1
    lines = [
        f"{label:<22}{', '.join(f'{file} ({n} {_tensors(n)})' for file, n in counts[label].items())}"
        for label, _ in _PARTS
        if label in counts
    ]
    for part in fresh:
        lines.append(f"{FRESH_PARTS[part]:<22}no file (--fresh {part}): random init, torch seed {FRESH_SEED}")
    for label, r in (("Q-Former LoRA", cfg.qformer.lora_r), ("LLM LoRA", cfg.llm.lora_r)):
        if label not in counts and r > 0:
            lines.append(f"{label:<22}no file: fresh adapters (r={r}, the identity until trained)")
    lines.append(f"{'LLM base weights':<22}{folder} (read at load time, not copied)")
    lines.append(f"{'LLM q/k norm biases':<22}no file: zeros, as in the reference")
    return lines


def _tensors(n: int) -> str:
    return "tensor" if n == 1 else "tensors"
