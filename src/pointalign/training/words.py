"""Stage kind ``words``: the modality projector learns to put point tokens where the LLM reads the words of the
object's caption, without running the LLM.

An LLM copies words from its context readily; a point token that lies near the input embedding of " chair" is one
it already knows how to read. For each cloud, the point tokens ``t`` (Q, D) are compared by cosine with the LLM's
input embeddings ``E`` of the caption vocabulary (every token of the training captions, lower-cased and with a leading
space as they appear mid-sentence, except those in more than ``words.max_df`` of the captions: " a", " with", ...).
A word's score is its best point token's, ``s_w = max_k cos(t_k, E_w) / words.temperature``, and the loss is the
cross-entropy of the caption's own words under the softmax of ``s`` over the vocabulary, averaged over them. Only
what the stage's ``trainable`` names trains (the projector); the LLM is never run. With everything before the
projector frozen, the feature cache (``cache.kind: auto``) computes the Q-Former outputs once per cloud, so after the
first pass over the clouds a step costs the projector and one (B, Q, W) similarity. With ``data.hide_dropped_colours``
a cloud whose colours were dropped is scored on its caption's words without the colour words.

``WORDS`` is the stage kind that ``training/run.py`` hands to the loop.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pointalign.data.colour_words import strip_colour_words
from pointalign.errors import ConfigError
from pointalign.training.config import TrainConfig
from pointalign.training.distributed import DistInfo, all_reduce_mean, average_gradients
from pointalign.training.loop import XYZ_ONLY, StageKind, StageRun, autocast, cloud_keys, clouds_for, setup
from pointalign.training.precision import PrecisionChoice


def word_tokens(text: str, tokenizer) -> list[int]:
    """The distinct token ids of ``text`` lower-cased and read with a leading space, as it appears mid-sentence."""
    return sorted(set(tokenizer(" " + text.lower(), add_special_tokens=False)["input_ids"]))


def caption_words(captions: list[str], tokenizer, max_df: float) -> tuple[list[int], dict[str, list[int]]]:
    """The caption vocabulary (token ids) and each caption's words as indices into it.

    Captions are read by ``word_tokens``; tokens found in more than ``max_df`` of the captions are left out of
    both."""
    tokens = {c: word_tokens(c, tokenizer) for c in captions}
    df = Counter(t for ids in tokens.values() for t in ids)
    keep = sorted(t for t, n in df.items() if n <= max_df * len(captions))
    if not keep:
        raise ConfigError(f"words.max_df={max_df}: every caption token is more frequent than that; nothing to learn")
    index = {t: i for i, t in enumerate(keep)}
    return keep, {c: [index[t] for t in ids if t in index] for c, ids in tokens.items()}


def word_loss(tokens: torch.Tensor, vocab: torch.Tensor, targets: list[list[int]], temperature: float) -> torch.Tensor:
    """Mean cross-entropy of each sample's caption words: (B, Q, D) point tokens, (W, D) unit word embeddings."""
    sims = F.normalize(tokens.float(), dim=-1) @ vocab.t()  # (B, Q, W)
    logp = (sims.max(dim=1).values / temperature).log_softmax(dim=-1)  # (B, W): each word by its best token
    losses = [-logp[b, idx].mean() for b, idx in enumerate(targets) if idx]
    if not losses:
        raise ConfigError("words: no caption in the batch has a word of the vocabulary (raise words.max_df)")
    return torch.stack(losses).mean()


def setup_words(cfg: TrainConfig, out: Path, dist: DistInfo, precision: PrecisionChoice | None = None) -> StageRun:
    """The ``words`` stage's run: an instruction stage's run plus the caption vocabulary and its LLM embeddings."""
    run = setup(cfg, out, dist, precision)
    captions = sorted({r.turns[0][1] for _, recs in run.data.sources for r in recs})
    keep, targets = caption_words(captions, run.model.tokenizer, cfg.words.max_df)
    if cfg.data.hide_dropped_colours and cfg.data.colour_dropout > 0:  # a colourless cloud's targets: no colour words
        index = {t: i for i, t in enumerate(keep)}
        for c in captions:
            ids = word_tokens(strip_colour_words(c), run.model.tokenizer)
            targets[c + XYZ_ONLY] = [index[t] for t in ids if t in index]
    table = run.model.llm.get_input_embeddings().weight.detach()
    vocab = F.normalize(table[torch.tensor(keep, device=table.device)].float(), dim=-1)  # (W, D)
    run.aux.update(vocab=vocab, targets=targets)
    return run


def words_step(run: StageRun, forward: nn.Module) -> dict[str, float]:
    """One optimizer step of the ``words`` stage."""
    del forward  # the LLM is not run; under DDP the projector's gradients are averaged by hand
    _, records = run.data.next_batch()
    keys = cloud_keys([r.object_id for r in records], run.cfg.data.colour_dropout)
    model = run.model
    with autocast(run):
        if run.cache is not None:  # everything before the projector frozen: its outputs computed once per cloud
            queries = run.cache.qformer_outputs(keys, lambda ks: clouds_for(run.store, ks)).to(run.dist.device)
        else:
            queries = model.query_outputs(clouds_for(run.store, keys).to(run.dist.device))  # (B, Q, Dq)
        tokens = model.projector(queries)  # (B, Q, D)
    hide = run.cfg.data.hide_dropped_colours
    targets = [
        run.aux["targets"][r.turns[0][1] + (XYZ_ONLY if hide and k.endswith(XYZ_ONLY) else "")]
        for r, k in zip(records, keys)
    ]
    loss = word_loss(tokens, run.aux["vocab"], targets, run.cfg.words.temperature)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(model.parameters(), run.dist)
    run.optimizer.step()
    return {"loss": float(all_reduce_mean(loss.detach(), run.dist)), "samples": len(records) * run.dist.world}


WORDS = StageKind(setup_words, words_step)
