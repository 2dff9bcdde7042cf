"""TinyGPT-V's modified Phi-2, the LLM of MiniGPT-3D and PointAlign, assembled from transformers' Phi parts.

Part of the LLM seam: only ``models/llm.py`` imports this module (it imports ``transformers``).

TinyGPT-V's block differs from Hugging Face's Phi block in three places (KEYS.md of the reference fixture):
    1. one fused ``query_key_value`` Linear whose 3H output rows are ordered (head, q/k/v, head_dim): transformers
       4.36's Phi-2 layout, not [Wq; Wk; Wv] stacked;
    2. ``q_layernorm`` / ``k_layernorm``: a LayerNorm over head_dim, shared by the heads, on the queries and the keys
       before the partial rotary embedding (always present; the folder's ``qk_layernorm`` flag is not read);
    3. ``post_layernorm``: an RMSNorm (eps 1e-6, hard-coded in TinyGPT-V) on the attention output, so that a block is
       ``x + post_layernorm(attn(a)) + mlp(a)`` with ``a = input_layernorm(x)``.
Everything else is transformers' Phi: the rotary embedding, the MLP, the attention kernels, the masks, the KV cache,
generation and the hidden-state capture (``hidden_states[0]`` = the input embeddings, ``hidden_states[l]`` = the
output of block l, the last one after ``final_layernorm``).

Notation used for tensor shapes: B batch, L new tokens, S cached + new tokens, H width, nh heads, hd head width.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import GenerationConfig, PhiConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.phi.modeling_phi import (
    PhiForCausalLM,
    PhiMLP,
    PhiModel,
    PhiPreTrainedModel,
    PhiRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from pointalign.errors import CheckpointError

POST_LAYERNORM_EPS = 1e-6  # TinyGPT-V's RMSNorm eps, hard-coded there (not config.layer_norm_eps)

# Weights TinyGPT-V's block has and a Phi-2 folder does not: they come from TinyGPT-V / MiniGPT-3D / PointAlign
# checkpoints (the q/k LayerNorm biases from no file at all). A folder alone leaves them at the identity.
_NEW_NORMS = re.compile(r"model\.layers\.\d+\.(self_attn\.[qk]_layernorm\.(weight|bias)|post_layernorm\.weight)")
_SPLIT_QKV = re.compile(r"(model\.layers\.\d+\.self_attn\.)([qkv])_proj\.(weight|bias)")


class TinyGPTVPhiAttention(nn.Module):
    """Multi-head attention with a fused (head, q/k/v, head_dim) projection and q/k LayerNorm before the rotary."""

    def __init__(self, config: PhiConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.num_key_value_groups = 1  # read by transformers' attention kernels: no grouped-query attention
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.rotary_ndims = int(self.head_dim * config.rope_parameters["partial_rotary_factor"])
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.q_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
        self.k_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor | None,
        cache: object | None = None,
        **kwargs: object,
    ) -> tuple[Tensor, Tensor | None]:
        b, length, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(b, length, self.num_heads, 3, self.head_dim)  # (B,L,nh,3,hd)
        query, key, value = (qkv[:, :, :, j].transpose(1, 2) for j in range(3))  # each (B, nh, L, hd)
        query, key = self.q_layernorm(query), self.k_layernorm(key)
        cos, sin = position_embeddings
        r = self.rotary_ndims  # the first r dims of each head rotate; the rest pass through
        query_rot, key_rot = apply_rotary_pos_emb(query[..., :r], key[..., :r], cos, sin)
        query = torch.cat((query_rot, query[..., r:]), dim=-1)  # (B, nh, L, hd)
        key = torch.cat((key_rot, key[..., r:]), dim=-1)  # (B, nh, L, hd)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)  # (B, nh, S, hd)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # (B, L, nh, hd)
        return self.dense(out.reshape(b, length, -1)), weights  # (B, L, H)


class TinyGPTVPhiDecoderLayer(GradientCheckpointingLayer):
    """Parallel block: ``x + dropout(post_layernorm(attn(a))) + dropout(mlp(a))``, ``a = input_layernorm(x)``."""

    def __init__(self, config: PhiConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = TinyGPTVPhiAttention(config, layer_idx)
        self.mlp = PhiMLP(config)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_layernorm = LlamaRMSNorm(config.hidden_size, eps=POST_LAYERNORM_EPS)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: object | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[Tensor, Tensor] | None = None,
        **kwargs: object,
    ) -> Tensor:
        normed = self.input_layernorm(hidden_states)  # (B, L, H)
        attn, _ = self.self_attn(normed, position_embeddings, attention_mask, cache=cache, **kwargs)  # (B, L, H)
        attn = self.resid_dropout(self.post_layernorm(attn))
        return attn + self.resid_dropout(self.mlp(normed)) + hidden_states  # (B, L, H)


class TinyGPTVPhiModel(PhiModel):
    """``PhiModel`` with TinyGPT-V's blocks; ``forward`` (masks, cache, rotary, hidden states) is transformers'."""

    _no_split_modules = ["TinyGPTVPhiDecoderLayer"]
    _can_record_outputs = {"hidden_states": TinyGPTVPhiDecoderLayer, "attentions": TinyGPTVPhiAttention}

    def __init__(self, config: PhiConfig) -> None:
        PhiPreTrainedModel.__init__(self, config)  # not PhiModel.__init__: it would build Hugging Face's blocks too
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([TinyGPTVPhiDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.rotary_emb = PhiRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()


class TinyGPTVPhiForCausalLM(PhiForCausalLM):
    """TinyGPT-V's Phi with its output head (``lm_head`` with bias); ``forward`` and ``generate`` are transformers'."""

    _no_split_modules = ["TinyGPTVPhiDecoderLayer"]
    _can_record_outputs = {"hidden_states": TinyGPTVPhiDecoderLayer, "attentions": TinyGPTVPhiAttention}
    _tied_weights_keys: dict[str, str] = {}  # Phi-2's lm_head is its own matrix (with a bias)

    def __init__(self, config: PhiConfig) -> None:
        PhiPreTrainedModel.__init__(self, config)  # not PhiForCausalLM.__init__: it would build a PhiModel too
        self.model = TinyGPTVPhiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:
    """Separate q/k/v projections (each (H, ...): a weight (H, H_in) or a bias (H,)) -> the fused (3H, ...) tensor
    whose rows are ordered (head, q/k/v, head_dim), i.e. ``fused.view(nh, 3, hd, ...)[:, j] == [q, k, v][j]``."""
    per_head = [t.reshape(num_heads, -1, *t.shape[1:]) for t in (q, k, v)]  # 3 x (nh, hd, ...)
    return torch.stack(per_head, dim=1).reshape(3 * q.shape[0], *q.shape[1:])  # (nh, 3, hd, ...) -> (3H, ...)


def split_qkv(fused: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """The inverse of ``fuse_qkv``: fused (3H, ...) rows in (head, q/k/v, head_dim) order -> q, k, v, each (H, ...)."""
    grouped = fused.reshape(num_heads, 3, -1, *fused.shape[1:])  # (nh, 3, hd, ...)
    q, k, v = (grouped[:, j].reshape(-1, *fused.shape[1:]) for j in range(3))
    return q, k, v


def load_phi2_folder(folder: str | Path, dtype: torch.dtype = torch.float32) -> TinyGPTVPhiForCausalLM:
    """TinyGPT-V's Phi with the base weights of a Phi-2 folder, in eval mode.

    The folder holds ``config.json`` and ``*.safetensors`` in either layout: transformers 4.36's fused
    ``self_attn.query_key_value`` (what MiniGPT-3D distributes as ``Phi_2``), or today's ``q_proj`` / ``k_proj`` /
    ``v_proj`` (microsoft/phi-2 on the Hub), fused here in (head, q/k/v, head_dim) order. Tensors are read one at a
    time, so Phi-2 is never held twice. The q/k LayerNorms and ``post_layernorm``, which no Phi-2 folder holds, start
    at the identity (weight 1, bias 0) until checkpoint weights are applied (``released.apply_llm_state``).

    Raises:
        FileNotFoundError: no ``config.json`` or no ``*.safetensors`` in ``folder``.
        CheckpointError: a tensor whose name or shape does not fit the config's Phi (naming the file, key and shapes),
            or base weights that no file supplies.
    """
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a Phi-2 folder)")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights (expected a Phi-2 folder)")
    config = PhiConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = TinyGPTVPhiForCausalLM(config).to(dtype)
    model.to_empty(device="cpu")  # storage only: every tensor is filled below
    params = dict(model.named_parameters())
    filled: set[str] = set()
    pending: dict[tuple[str, str], dict[str, Tensor]] = {}  # (layer prefix, weight|bias) -> {q,k,v: tensor}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.endswith("rotary_emb.inv_freq"):  # older saves carry the (recomputed) rotary buffer
                    continue
                split = _SPLIT_QKV.fullmatch(key)
                if split is None:
                    _copy_into(params, key, f.get_tensor(key), f"{file.name}: {key}", config)
                    filled.add(key)
                    continue
                prefix, which, kind = split.groups()
                parts = pending.setdefault((prefix, kind), {})
                parts[which] = f.get_tensor(key)
                if len(parts) == 3:
                    fused = fuse_qkv(
                        *(_checked_split(parts[w], prefix, w, kind, file, config) for w in "qkv"),
                        num_heads=config.num_attention_heads,
                    )
                    name = f"{prefix}query_key_value.{kind}"
                    _copy_into(params, name, fused, f"{file.name}: {prefix}{{q,k,v}}_proj.{kind}", config)
                    filled.add(name)
                    del pending[(prefix, kind)]
    if pending:
        partial = [f"{p}{{{','.join(sorted(parts))}}}_proj.{kind}" for (p, kind), parts in pending.items()]
        raise CheckpointError(f"{folder}: q/k/v projections incomplete (a fused layer needs all three): {partial}")
    with torch.no_grad():
        for name in [n for n in params if n not in filled and _NEW_NORMS.fullmatch(n)]:
            params[name].fill_(0.0 if name.endswith("bias") else 1.0)
            filled.add(name)
    missing = sorted(set(params) - filled)
    if missing:
        raise CheckpointError(f"{folder}: no file supplies {len(missing)} Phi-2 weights: {missing[:8]}")
    model.model.rotary_emb = PhiRotaryEmbedding(config=config)  # its non-persistent buffers were left unfilled
    generation = folder / "generation_config.json"
    if generation.is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


def _copy_into(params: dict[str, nn.Parameter], name: str, tensor: Tensor, where: str, config: PhiConfig) -> None:
    if name not in params:
        raise CheckpointError(
            f"{where}: not a weight of Phi-2 (TinyGPT-V's modified Phi, {config.num_hidden_layers} layers); "
            "is this a Phi-2 folder?"
        )
    target = params[name]
    if tuple(tensor.shape) != tuple(target.shape):
        raise CheckpointError(
            f"{where}: shape {tuple(tensor.shape)} does not fit {name} {tuple(target.shape)} of the config's Phi "
            f"(hidden_size {config.hidden_size}, {config.num_attention_heads} heads, "
            f"intermediate_size {config.intermediate_size}, vocab {config.vocab_size})"
        )
    with torch.no_grad():
        target.copy_(tensor)


def _checked_split(tensor: Tensor, prefix: str, which: str, kind: str, file: Path, config: PhiConfig) -> Tensor:
    """A separate q/k/v projection, checked to be (H, H) / (H,) before it is fused."""
    h = config.hidden_size
    expected = (h, h) if kind == "weight" else (h,)
    if tuple(tensor.shape) != expected:
        raise CheckpointError(
            f"{file.name}: {prefix}{which}_proj.{kind} has shape {tuple(tensor.shape)}, expected {expected} "
            f"(hidden_size {h}, {config.num_attention_heads} heads): the q/k/v projections cannot be fused"
        )
    return tensor
