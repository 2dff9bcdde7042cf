"""Sentence embeddings: all-MiniLM-L6-v2 (stage-0 pretraining, the offline judge) and the caption metrics' Sentence-BERT
(all-mpnet-base-v2 from its PyPI parts, MiniLM, or any local sentence-transformers folder).

``sentence-transformers`` is imported here only, when first needed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from pointalign.models.qformer import minilm_folder


def resolve_text_encoder(name: str) -> str:
    """``"minilm"`` / ``"mpnet"`` -> the packaged model's folder; anything else is a folder already."""
    if name == "minilm":
        return str(minilm_folder())
    if name == "mpnet":
        from pointalign.eval.mpnet import mpnet_folder

        return str(mpnet_folder())
    return name


@lru_cache(maxsize=2)
def load_text_encoder(name: str = "minilm"):
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    folder = resolve_text_encoder(name)
    if not (Path(folder) / "config.json").is_file() and not (Path(folder) / "modules.json").is_file():
        raise FileNotFoundError(f"text encoder {name!r}: no sentence-transformers folder at {folder}")
    return SentenceTransformer(folder, device="cpu")


@torch.no_grad()
def embed_texts(texts: list[str], name: str = "minilm", batch_size: int = 64) -> torch.Tensor:
    """(n, D) unit-norm sentence embeddings."""
    model = load_text_encoder(name)
    emb = model.encode(
        list(texts), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
    )
    return emb.float().cpu()
