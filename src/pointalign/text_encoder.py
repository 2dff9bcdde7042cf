"""Sentence embeddings (all-MiniLM-L6-v2 by default) for stage-0 pretraining and the caption metrics.

``sentence-transformers`` is imported here only, when first needed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from pointalign.models.qformer import minilm_folder


def resolve_text_encoder(name: str) -> str:
    if name == "minilm":
        return str(minilm_folder())
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
