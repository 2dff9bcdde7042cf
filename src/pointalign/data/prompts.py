"""The one prompt builder, shared by training, evaluation, chat and the demo.

A dialogue is rendered with the tokenizer's chat template. The first user message carries the point cloud as
``{point_start}<Q point tokens>{point_end} {question}``. The rendered text is cut at the point placeholder and at
every answer's start and end, and each piece is tokenised on its own, so a generation prompt is token for token the
prefix that the same dialogue has in training (no train/eval mismatch). Labels are -100 everywhere but the answers
(each answer includes the template's end-of-turn text, so the model learns to stop).

``prompt.style: minigpt3d`` / ``pointalign`` build the reference code's strings instead (the default of imported
released models): its evaluation prompt for generation and its training strings for training, which differ (the
reference's own train/test mismatch, which its published figures include). See ``_reference_pieces``.

Notation used for tensor shapes: B batch, L tokens, Q point tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from pointalign.config import PromptConfig

IGNORE_INDEX = -100
POINT_PLACEHOLDER = "<|pointalign-point-cloud|>"


@dataclass
class EncodedPrompt:
    """One tokenised dialogue (training) or prompt (generation)."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX except answer tokens
    point_start: int  # index of the first of the Q point tokens
    answer_start: int  # index of the first supervised token; len(input_ids) for a generation prompt


@dataclass
class PromptBatch:
    """A padded batch. ``point_positions[b]`` are sample b's exact point-token positions."""

    input_ids: Tensor  # (B, L) long; point positions hold the pad id and are replaced by point tokens
    attention_mask: Tensor  # (B, L) long
    labels: Tensor  # (B, L) long
    point_positions: Tensor  # (B, Q) long
    answer_start: Tensor  # (B,) long: first supervised position (the prompt length)

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


Turn = tuple[str, str]  # (question, answer)
Piece = tuple[str | None, bool]  # (text, supervised); None stands for the point tokens

# The reference code's strings (MiniGPT-3D / PointAlign, KEYS.md §8), for prompt.style minigpt3d / pointalign.
# "<s>" is literal text for Phi-2's tokenizer, not a BOS token.
REFERENCE_USER = "<s>[INST] "  # CONV_VISION's user role (evaluation and chat)
REFERENCE_ASSISTANT = " [/INST]"  # CONV_VISION's assistant role
REFERENCE_TRAIN_TEMPLATE = "[INST] {} [/INST]"  # the training prompt_template


class PromptBuilder:
    """Builds token sequences with Q point tokens from (question, answer) turns."""

    def __init__(self, tokenizer: Any, cfg: PromptConfig, num_point_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.num_point_tokens = num_point_tokens
        if tokenizer.pad_token_id is None:
            raise ValueError("PromptBuilder: the tokenizer has no pad token")
        self.pad_id = int(tokenizer.pad_token_id)

    # -- messages ------------------------------------------------------------------------------------------------
    def messages(self, turns: Sequence[Turn], question: str | None = None) -> list[dict[str, str]]:
        """Chat messages for ``turns`` (and a trailing unanswered ``question``); points go in the first user turn."""
        msgs: list[dict[str, str]] = []
        if self.cfg.system_prompt is not None:
            msgs.append({"role": "system", "content": self.cfg.system_prompt})
        questions = [q for q, _ in turns] + ([question] if question is not None else [])
        if not questions:
            raise ValueError("PromptBuilder: a dialogue needs at least one question")
        for i, q in enumerate(questions):
            if POINT_PLACEHOLDER in q:
                raise ValueError("PromptBuilder: the question contains the reserved point placeholder")
            if i == 0:
                q = f"{self.cfg.point_start}{POINT_PLACEHOLDER}{self.cfg.point_end} {q}"
            msgs.append({"role": "user", "content": q})
            if i < len(turns):
                msgs.append({"role": "assistant", "content": turns[i][1]})
        return msgs

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    # -- encoding ------------------------------------------------------------------------------------------------
    def encode(
        self,
        turns: Sequence[Turn],
        question: str | None = None,
        *,
        hide: Callable[[str], list[tuple[int, int]]] | None = None,
    ) -> EncodedPrompt:
        """Tokenise a dialogue. With ``question`` the result is a generation prompt for it (answers so far kept).

        ``hide`` maps an answer's text to character spans whose tokens carry no loss (e.g. the colour words of a
        cloud that lost its colours); the tokens are the same, only their labels become IGNORE_INDEX."""
        generation = question is not None
        if self.cfg.style == "chat":
            prefix, pieces = [], self._chat_pieces(turns, question)
        else:
            prefix, pieces = self._reference_pieces(turns, question)
        ids: list[int] = list(prefix)
        labels: list[int] = [IGNORE_INDEX] * len(prefix)
        point_start = -1
        first_answer = -1  # index of the first token of the first supervised piece
        for text, supervised in pieces:
            if text is None:
                point_start = len(ids)
                ids += [self.pad_id] * self.num_point_tokens
                labels += [IGNORE_INDEX] * self.num_point_tokens
                continue
            if supervised and hide is not None and (spans := hide(text)):
                piece, piece_labels = self._tokenize_hiding(text, spans)
            else:
                piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                piece_labels = piece if supervised else [IGNORE_INDEX] * len(piece)
            if supervised and first_answer < 0 and piece:
                first_answer = len(ids)
            ids += piece
            labels += piece_labels
        if generation:  # nothing is supervised in a generation prompt; the answer starts where it ends
            labels = [IGNORE_INDEX] * len(ids)
        answer_start = len(ids) if generation or first_answer < 0 else first_answer  # a hidden word does not move it
        if not generation and answer_start == len(ids):
            raise ValueError("PromptBuilder: a training dialogue needs at least one answer")
        if len(ids) > self.cfg.max_length:
            raise ValueError(
                f"PromptBuilder: dialogue of {len(ids)} tokens exceeds prompt.max_length={self.cfg.max_length}"
            )
        return EncodedPrompt(ids, labels, point_start, answer_start)

    def _tokenize_hiding(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """``text``'s token ids and labels, IGNORE_INDEX for every token that overlaps one of ``spans``."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("PromptBuilder: hiding answer words needs a fast tokenizer (token offsets)")
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [
            IGNORE_INDEX if any(a < e and s < b for s, e in spans) else t
            for t, (a, b) in zip(ids, enc["offset_mapping"])
        ]
        return ids, labels

    def _chat_pieces(self, turns: Sequence[Turn], question: str | None) -> list[Piece]:
        """The dialogue rendered by the chat template, cut at the point placeholder and at every answer's bounds."""
        msgs = self.messages(turns, question)
        text = self._render(msgs, add_generation_prompt=question is not None)
        spans: list[tuple[int, int]] = []  # character spans of the answers
        for idx, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            pre = self._render(msgs[:idx], add_generation_prompt=True)
            upto = self._render(msgs[: idx + 1], add_generation_prompt=False)
            if not (upto.startswith(pre) and text.startswith(upto) and m["content"] in upto[len(pre) :]):
                raise ValueError(
                    "PromptBuilder: the chat template does not render dialogues as growing prefixes; "
                    "set prompt.chat_template to one that does"
                )
            spans.append((len(pre), len(upto)))
        ph = text.find(POINT_PLACEHOLDER)
        if ph < 0 or text.find(POINT_PLACEHOLDER, ph + 1) >= 0:
            raise ValueError("PromptBuilder: the chat template must render the point placeholder exactly once")
        cuts = sorted({0, len(text), ph, ph + len(POINT_PLACEHOLDER), *(c for s in spans for c in s)})
        return [
            (None, False) if a == ph else (text[a:b], any(s <= a and b <= e for s, e in spans))
            for a, b in zip(cuts[:-1], cuts[1:])
        ]

    def _reference_pieces(self, turns: Sequence[Turn], question: str | None) -> tuple[list[int], list[Piece]]:
        """The reference code's strings (``minigpt3d`` / ``pointalign`` styles; KEYS.md §8): the token ids before the
        text (the training BOS) and the pieces, each tokenised on its own as the reference does."""
        questions = [q for q, _ in turns] + ([question] if question is not None else [])
        if not questions:
            raise ValueError("PromptBuilder: a dialogue needs at least one question")
        if any(POINT_PLACEHOLDER in q for q in questions):
            raise ValueError("PromptBuilder: the question contains the reserved point placeholder")
        start, end = self.cfg.point_start, self.cfg.point_end
        if question is not None:  # evaluation and chat: CONV_VISION, the rest of the dialogue one text after the points
            rest = f"{end} {REFERENCE_USER}{questions[0]}{REFERENCE_ASSISTANT}"
            rest += "".join(f"{a}{REFERENCE_USER}{q}{REFERENCE_ASSISTANT}" for (_, a), q in zip(turns, questions[1:]))
            return [], [(f"{REFERENCE_USER}{start}", False), (None, False), (rest, False)]
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise ValueError(f"PromptBuilder: prompt.style={self.cfg.style!r} needs a tokenizer with a BOS token")
        # PointAlign never passed chat_template, so its single turns are untemplated; conversations always are
        templated = self.cfg.style == "minigpt3d" or len(turns) > 1
        first = f"{start}{POINT_PLACEHOLDER}{end} {questions[0]} "  # the dataset's instruction (trailing space)
        before, after = (REFERENCE_TRAIN_TEMPLATE.format(first) if templated else first).split(POINT_PLACEHOLDER)
        pieces: list[Piece] = [
            (before, False),
            (None, False),
            (after, False),
            (turns[0][1] + self.cfg.end_symbol, True),
        ]
        for q, a in turns[1:]:  # later rounds: <|endoftext|> + the template (masked), then the answer
            pieces += [(self.tokenizer.eos_token + REFERENCE_TRAIN_TEMPLATE.format(f"{q} "), False)]
            pieces += [(a + self.cfg.end_symbol, True)]
        return [int(bos)], pieces

    # -- batching ------------------------------------------------------------------------------------------------
    def collate(self, items: Sequence[EncodedPrompt], padding_side: Literal["right", "left"]) -> PromptBatch:
        """Pad to the longest item: right padding for training, left padding for generation."""
        if not items:
            raise ValueError("PromptBuilder.collate: empty batch")
        longest = max(len(it.input_ids) for it in items)
        q = self.num_point_tokens
        ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        positions = torch.empty((len(items), q), dtype=torch.long)
        answer_start = torch.empty(len(items), dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it.input_ids)
            off = longest - n if padding_side == "left" else 0
            ids[b, off : off + n] = torch.tensor(it.input_ids)
            mask[b, off : off + n] = 1
            labels[b, off : off + n] = torch.tensor(it.labels)
            positions[b] = off + it.point_start + torch.arange(q)
            answer_start[b] = off + it.answer_start
        return PromptBatch(ids, mask, labels, positions, answer_start)


def legacy_positions(batch: PromptBatch, num_point_tokens: int) -> Tensor:
    """The reference implementation's alignment positions (REFERENCE_SPEC 2), for ablation only.

    The reference takes the last Q positions before the batch-max prompt length, assuming the point tokens end the
    prompt. Every sample gets the same slice ``[P_max - Q, P_max)``, where ``P_max`` is the longest prompt (tokens
    before the first answer token) in the batch: shifted right by the text after the point tokens, and further for
    shorter prompts (reaching into their answers). Clamped to the sequence length.

    Returns:
        (B, Q) long positions.
    """
    p_max = int(batch.answer_start.max())
    pos = torch.arange(p_max - num_point_tokens, p_max).clamp(0, batch.input_ids.shape[1] - 1)
    return pos.unsqueeze(0).expand(batch.input_ids.shape[0], -1).clone()
