"""PointAlignModel: point encoder -> bridge -> Q-Former -> modality projector -> LLM, plus the alignment loss.

Notation used for tensor shapes:
    B batch, N points, F point features, T point tokens (G + 1), C encoder width, V bridge width,
    Q queries / point tokens in the LLM, Dq Q-Former width, L sequence length, D LLM width, W vocabulary.

The alignment loss reads ``hidden_states[layer]`` (the output of decoder block ``layer``, 1-based) through a forward
hook on that block, so no other layer's states are kept. It pairs query k with the k-th point-token position of each
sample (``span: exact``), or with the reference implementation's shifted slice (``span: legacy``, ablation only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointalign.config import AlignConfig, GenerationConfig, ModelConfig
from pointalign.data.prompts import PromptBatch, PromptBuilder, Turn, legacy_positions
from pointalign.errors import ConfigError
from pointalign.losses import alignment_loss, gather_positions, next_token_loss
from pointalign.models import llm as llm_seam


@dataclass
class PointFeatures:
    """What the vision side hands the LLM: the Q-Former outputs (cacheable when frozen) and the point tokens."""

    qformer_out: Tensor  # (B, Q, Dq): the alignment anchor
    point_tokens: Tensor  # (B, Q, D): spliced into the LLM input


@dataclass
class PointAlignOutput:
    loss: Tensor  # ntp_loss + weight * align_loss (or ntp_loss alone)
    ntp_loss: Tensor
    align_loss: Tensor | None  # None when the alignment loss is off
    logits: Tensor  # (S, W): at the S positions that predict a supervised token only
    num_tokens: int  # supervised tokens in the batch


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip padding, so left- and right-padded samples see the same positions: (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PointAlignModel(nn.Module):
    """A 3D vision-language model composed of the parts it is given."""

    def __init__(
        self,
        point_encoder: nn.Module,
        bridge: nn.Module,
        qformer: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        builder: PromptBuilder,
        align: AlignConfig,
        align_projector: nn.Module | None = None,
        config: ModelConfig | None = None,
        query_experts: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.point_encoder = point_encoder
        self.bridge = bridge
        self.qformer = qformer
        self.query_experts = query_experts  # MiniGPT-3D's mixture of query experts, or None
        self.projector = projector
        self.llm = llm
        self.align_projector = align_projector
        self.builder = builder
        self.align_cfg = align
        self.config = config  # the config it was built from, when built by build_model
        self.eval_parts: set[str] = set()  # parts kept in eval mode by train() (set by the trainable policy)
        n_layers = len(llm_seam.decoder_layers(llm))
        if align_projector is not None and not 1 <= align.layer <= n_layers:
            raise ConfigError(f"align.layer={align.layer}: the LLM has {n_layers} decoder blocks (1..{n_layers})")

    @property
    def tokenizer(self):
        return self.builder.tokenizer

    def train(self, mode: bool = True) -> PointAlignModel:
        super().train(mode)
        if mode:
            for name in self.eval_parts:
                part = getattr(self, name)
                if part is not None:
                    part.eval()
        return self

    # -- vision side ---------------------------------------------------------------------------------------------
    def query_outputs(self, points: Tensor) -> Tensor:
        """(B, N, F) point clouds -> Q-Former outputs (B, Q, Dq): everything before the modality projector."""
        tokens = self.point_encoder(points)  # (B, T, C)
        features = self.bridge(tokens)  # (B, T, V)
        if self.query_experts is None:
            return self.qformer(features)  # (B, Q, Dq)
        return self.query_experts(tokens, features, self.qformer)  # (B, Q, Dq)

    def encode_points(self, points: Tensor) -> PointFeatures:
        """(B, N, F) point clouds -> Q-Former outputs (B, Q, Dq) and LLM point tokens (B, Q, D)."""
        return self.project(self.query_outputs(points))

    def project(self, qformer_out: Tensor) -> PointFeatures:
        """Q-Former outputs (B, Q, Dq) -> features with the LLM point tokens (B, Q, D)."""
        return PointFeatures(qformer_out=qformer_out, point_tokens=self.projector(qformer_out))

    def embed(self, batch: PromptBatch, point_tokens: Tensor) -> Tensor:
        """Text embeddings with the point tokens spliced in at ``batch.point_positions``: (B, L, D)."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)  # (B, L, D)
        if point_tokens.shape[:2] != batch.point_positions.shape:
            raise ValueError(
                f"{tuple(point_tokens.shape[:2])} point tokens for {tuple(batch.point_positions.shape)} positions"
            )
        rows = torch.arange(embeds.shape[0], device=embeds.device)[:, None]  # (B, 1)
        index = (rows.expand_as(batch.point_positions), batch.point_positions)
        return embeds.index_put(index, point_tokens.to(embeds.dtype))

    def align_positions(self, batch: PromptBatch) -> Tensor:
        """(B, Q) positions whose hidden states are aligned, per ``align.span``."""
        if self.align_cfg.span == "legacy":
            return legacy_positions(batch, batch.point_positions.shape[1]).to(batch.input_ids.device)
        return batch.point_positions

    # -- training forward ----------------------------------------------------------------------------------------
    def forward(
        self, batch: PromptBatch, points: Tensor | None = None, qformer_out: Tensor | None = None
    ) -> PointAlignOutput:
        """Next-token loss on the answers, plus the alignment loss when an alignment projector is present.

        Give either ``points`` (B, N, F) or precomputed Q-Former outputs ``qformer_out`` (B, Q, Dq) (the feature
        cache's); the modality projector runs here either way, so it can train on cached outputs.
        """
        if (points is None) == (qformer_out is None):
            raise ValueError("PointAlignModel.forward: give exactly one of points / qformer_out")
        feats = self.encode_points(points) if qformer_out is None else self.project(qformer_out)
        embeds = self.embed(batch, feats.point_tokens)  # (B, L, D)
        captured: list[Tensor] = []
        handle = None
        if self.align_projector is not None:
            block = llm_seam.decoder_layers(self.llm)[self.align_cfg.layer - 1]
            handle = block.register_forward_hook(
                lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
            )
        try:
            # the decoder stack alone: the output head runs on the supervised positions only (next_token_loss)
            last = llm_seam.decoder_stack(self.llm)(
                inputs_embeds=embeds,
                attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask),
                use_cache=False,
            ).last_hidden_state  # (B, L, D)
        finally:
            if handle is not None:
                handle.remove()
        ntp, logits = next_token_loss(last, batch.labels, self.llm.get_output_embeddings())  # logits (S, W)
        align = None
        loss = ntp
        if self.align_projector is not None:
            if len(captured) != 1:
                raise RuntimeError(f"alignment hook on block {self.align_cfg.layer} fired {len(captured)} times")
            hidden = gather_positions(captured[0], self.align_positions(batch))  # (B, Q, D)
            proj_dtype = next(self.align_projector.parameters()).dtype
            align = alignment_loss(self.align_projector(hidden.to(proj_dtype)), feats.qformer_out)
            loss = ntp + self.align_cfg.weight * align
        return PointAlignOutput(loss=loss, ntp_loss=ntp, align_loss=align, logits=logits, num_tokens=len(logits))

    # -- generation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(
        self,
        points: Tensor,
        questions: Sequence[str],
        histories: Sequence[Sequence[Turn]] | None = None,
        config: GenerationConfig | None = None,
    ) -> Tensor:
        """The generated token ids, one row per question (batched, left-padded, with the KV cache): (B, new tokens).

        Args:
            points: (B, N, F) point clouds.
            questions: B questions.
            histories: optional earlier (question, answer) turns per sample (multi-turn chat).
            config: decoding settings (default: the reference evaluation's beam-2 sampling).
        """
        config = config or GenerationConfig()
        if len(questions) != points.shape[0]:
            raise ValueError(f"generate: {points.shape[0]} point clouds but {len(questions)} questions")
        histories = histories if histories is not None else [[] for _ in questions]
        items = [self.builder.encode(list(h), q) for h, q in zip(histories, questions)]
        device = points.device
        batch = self.builder.collate(items, padding_side="left").to(device)
        embeds = self.embed(batch, self.encode_points(points).point_tokens)  # (B, L, D)
        if config.do_sample:
            torch.manual_seed(config.seed)
        tok = self.tokenizer
        prompt = self.builder.cfg
        stop = {} if prompt.style == "chat" else {"stop_strings": [prompt.end_symbol], "tokenizer": tok}
        return self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=config.max_new_tokens,
            min_new_tokens=config.min_new_tokens,
            num_beams=config.num_beams,
            do_sample=config.do_sample,
            temperature=config.temperature if config.do_sample else None,
            top_p=config.top_p if config.do_sample else None,
            top_k=None,
            repetition_penalty=config.repetition_penalty,
            length_penalty=config.length_penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            use_cache=True,
            **stop,
        )  # (B, new tokens): with inputs_embeds only the generated tokens come back

    def generate(
        self,
        points: Tensor,
        questions: Sequence[str],
        histories: Sequence[Sequence[Turn]] | None = None,
        config: GenerationConfig | None = None,
    ) -> list[str]:
        """Answer one question per point cloud (``generate_ids``, decoded; in a reference prompt style each answer is
        cut at the end symbol)."""
        texts = self.tokenizer.batch_decode(
            self.generate_ids(points, questions, histories, config), skip_special_tokens=True
        )
        if self.builder.cfg.style != "chat":
            texts = [text.split(self.builder.cfg.end_symbol, 1)[0] for text in texts]
        return [text.strip() for text in texts]
