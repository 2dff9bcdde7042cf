"""``build_model``: the one place where a ModelConfig becomes modules."""

from __future__ import annotations

import torch

from pointalign.config import ModelConfig
from pointalign.data.prompts import PromptBuilder
from pointalign.models import llm as llm_seam
from pointalign.models.point_encoder import PointEncoder, load_point_bert_checkpoint
from pointalign.models.pointalign import PointAlignModel
from pointalign.models.projector import AlignmentProjector, Bridge, ModalityProjector
from pointalign.models.qformer import QFormer, load_bert_weights
from pointalign.models.query_experts import QueryExperts


def build_model(cfg: ModelConfig, *, for_inference: bool = False) -> PointAlignModel:
    """Build a PointAlign model; pretrained parts come from the paths in ``cfg``, the rest is seeded random init.

    Args:
        cfg: the model configuration.
        for_inference: never build the alignment projector (it is used only in training).
    """
    missing = llm_seam.missing_local_sources(cfg)
    if missing:
        raise FileNotFoundError(
            f"preset {cfg.preset!r} needs local weights that are not there: "
            + "; ".join(missing)
            + ". Point the keys at your copies (e.g. --set llm.source=/models/phi-2)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        llm, tokenizer = llm_seam.load_llm(cfg.llm, cfg.prompt)
        d_llm = llm_seam.hidden_size(llm)
        encoder = PointEncoder(cfg.encoder)
        if cfg.encoder.checkpoint:
            load_point_bert_checkpoint(encoder, cfg.encoder.checkpoint)
        bridge = Bridge(cfg.bridge, cfg.encoder.trans_dim, cfg.qformer.encoder_width)
        qformer = QFormer(cfg.qformer)
        if cfg.qformer.init_from:
            load_bert_weights(qformer, cfg.qformer.init_from)
        if cfg.qformer.lora_r > 0:
            llm_seam.apply_qformer_lora(qformer, cfg.qformer)
        experts = None
        if cfg.experts.num_experts > 1:
            experts = QueryExperts(cfg.experts, cfg.encoder.trans_dim, cfg.qformer.num_queries, cfg.qformer.hidden_size)
            experts.copy_queries(qformer.query_tokens)
        text_rms = None
        if cfg.projector.output_scale == "text":
            text_rms = float(llm.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
        projector = ModalityProjector(cfg.projector, cfg.qformer.hidden_size, d_llm, text_rms)
        if cfg.llm.lora_r > 0:
            llm = llm_seam.apply_lora(llm, cfg.llm)
        align_projector = None
        if cfg.align.enabled and not for_inference:
            align_projector = AlignmentProjector(d_llm, cfg.qformer.hidden_size, cfg.align.projector_hidden)
    builder = PromptBuilder(tokenizer, cfg.prompt, cfg.qformer.num_queries)
    model = PointAlignModel(
        encoder, bridge, qformer, projector, llm, builder, cfg.align, align_projector, config=cfg, query_experts=experts
    )
    return model
