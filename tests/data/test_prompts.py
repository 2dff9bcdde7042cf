import pytest
import torch

from pointalign.config import PromptConfig
from pointalign.data.prompts import IGNORE_INDEX, POINT_PLACEHOLDER, PromptBuilder, legacy_positions
from pointalign.models.llm import build_tiny_tokenizer

Q = 3


@pytest.fixture
def builder():
    return PromptBuilder(build_tiny_tokenizer(), PromptConfig(max_length=256), Q)


def supervised_text(builder, enc):
    return builder.tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])


def test_labels_cover_only_answers(builder):
    enc = builder.encode([("What is this?", "A chair."), ("How many legs?", "Four.")])
    assert supervised_text(builder, enc) == "A chair.<|im_end|>\nFour.<|im_end|>\n"
    assert enc.labels[: enc.answer_start] == [IGNORE_INDEX] * enc.answer_start
    text = builder.tokenizer.decode(enc.input_ids[: enc.point_start])
    assert text.endswith("<PC>")
    after = builder.tokenizer.decode(enc.input_ids[enc.point_start + Q :])
    assert after.startswith("</PC> What is this?")


def test_generation_prompt_is_training_prefix(builder):
    train = builder.encode([("What is this?", "A chair."), ("How many legs?", "Four.")])
    first = builder.encode([], "What is this?")
    second = builder.encode([("What is this?", "A chair.")], "How many legs?")
    for gen in (first, second):
        n = len(gen.input_ids)
        assert gen.input_ids == train.input_ids[:n]
        assert train.labels[n] != IGNORE_INDEX and train.labels[n - 1] == IGNORE_INDEX
        assert gen.answer_start == n and gen.point_start == train.point_start


def test_system_prompt(builder):
    b = PromptBuilder(builder.tokenizer, PromptConfig(system_prompt="You see 3D."), Q)
    assert builder.tokenizer.decode(b.encode([], "Hi").input_ids).startswith("<|im_start|>system\nYou see 3D.")


def test_collate_right_and_left(builder):
    items = [builder.encode([("Hi", "A.")]), builder.encode([("A much longer question here", "B.")])]
    right = builder.collate(items, "right")
    left = builder.collate(items, "left")
    assert right.input_ids.shape == left.input_ids.shape
    short = len(items[0].input_ids)
    pad = right.input_ids.shape[1] - short
    assert right.attention_mask[0].tolist() == [1] * short + [0] * pad
    assert left.attention_mask[0].tolist() == [0] * pad + [1] * short
    assert right.point_positions[0].tolist() == [items[0].point_start + k for k in range(Q)]
    assert left.point_positions[0].tolist() == [pad + items[0].point_start + k for k in range(Q)]
    assert right.labels[0, short:].eq(IGNORE_INDEX).all()


def test_legacy_positions_are_shifted_as_documented(builder):
    items = [builder.encode([("Hi", "A.")]), builder.encode([("A much longer question here", "B.")])]
    batch = builder.collate(items, "right")
    legacy = legacy_positions(batch, Q)
    p_max = max(it.answer_start for it in items)
    assert legacy[0].tolist() == legacy[1].tolist() == list(range(p_max - Q, p_max))
    # shifted right of the exact span by the text after the point tokens ...
    assert (legacy > batch.point_positions).all()
    assert (legacy[1] == batch.answer_start[1] - Q + torch.arange(Q)).all()
    # ... and, for the shorter prompt, into its answer tokens
    assert (legacy[0] >= batch.answer_start[0]).any()


def test_bad_dialogues(builder):
    with pytest.raises(ValueError, match="at least one question"):
        builder.encode([])
    with pytest.raises(ValueError, match="reserved point placeholder"):
        builder.encode([(POINT_PLACEHOLDER, "x")])
    with pytest.raises(ValueError, match="exceeds prompt.max_length=256"):
        builder.encode([("x" * 400, "y")])
    with pytest.raises(ValueError, match="empty batch"):
        builder.collate([], "right")


def test_template_without_prefix_property(builder):
    tok = build_tiny_tokenizer()
    tok.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}|{% endfor %}"
    b = PromptBuilder(tok, PromptConfig(), Q)
    with pytest.raises(ValueError, match="growing prefixes"):
        b.encode([("q1", "a1"), ("q2", "a2")])


def test_point_tokens_are_pad_placeholders(builder):
    enc = builder.encode([("Hi", "A.")])
    assert enc.input_ids[enc.point_start : enc.point_start + Q] == [builder.pad_id] * Q
    assert isinstance(builder.collate([enc], "left").input_ids, torch.Tensor)


@pytest.mark.parametrize("style", ["minigpt3d", "pointalign"])
def test_reference_styles_render_the_reference_strings(style):
    tok = build_tiny_tokenizer()  # bos <|im_start|>, eos <|im_end|>: the strings use whatever the tokenizer has
    b = PromptBuilder(tok, PromptConfig(style=style), Q)

    def text(enc):
        ids = enc.input_ids
        return tok.decode(ids[: enc.point_start]) + "<points>" + tok.decode(ids[enc.point_start + Q :])

    single = b.encode([("what is this", "a chair")])
    first = (
        "[INST] <PC><points></PC> what is this  [/INST]" if style == "minigpt3d" else "<PC><points></PC> what is this "
    )
    assert text(single) == f"<|im_start|>{first}a chair###"
    assert supervised_text(b, single) == "a chair###"
    # conversations are templated in both styles; later questions follow an end-of-text token, masked
    double = b.encode([("what is this", "a chair"), ("legs?", "four")])
    expected = (
        "<|im_start|>[INST] <PC><points></PC> what is this  [/INST]a chair###<|im_end|>[INST] legs?  [/INST]four###"
    )
    assert text(double) == expected
    assert supervised_text(b, double) == "a chair###four###"
    # generation: the reference's evaluation prompt (no BOS), earlier answers in its chat's layout
    chat = b.encode([("What is this?", "A chair.")], "Legs?")
    assert text(chat) == "<s>[INST] <PC><points></PC> <s>[INST] What is this? [/INST]A chair.<s>[INST] Legs? [/INST]"
    assert chat.answer_start == len(chat.input_ids) and set(chat.labels) == {IGNORE_INDEX}


def test_hidden_spans_lose_their_labels_not_their_tokens(builder):
    from pointalign.data.colour_words import colour_spans

    turns = [("What colour is it?", "Red, mostly."), ("And the legs?", "The legs are grey.")]
    plain = builder.encode(turns)
    hidden = builder.encode(turns, hide=colour_spans)
    assert hidden.input_ids == plain.input_ids and hidden.point_start == plain.point_start
    assert hidden.answer_start == plain.answer_start  # the hidden first word still starts the answer
    assert supervised_text(builder, plain) == "Red, mostly.<|im_end|>\nThe legs are grey.<|im_end|>\n"
    assert supervised_text(builder, hidden) == ", mostly.<|im_end|>\nThe legs are .<|im_end|>\n"
    # questions are never supervised, so spans found there change nothing
    assert (
        builder.encode([("Is it red?", "Yes.")], hide=colour_spans).labels
        == builder.encode([("Is it red?", "Yes.")]).labels
    )


def test_hiding_needs_token_offsets(builder):
    class Slow:
        is_fast = False

        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __call__(self, *args, **kwargs):
            return self.tok(*args, **kwargs)

    b = PromptBuilder(Slow(builder.tokenizer), builder.cfg, Q)
    b.encode([("Hi", "A red chair.")])  # nothing hidden: no offsets needed
    with pytest.raises(ValueError, match="fast tokenizer"):
        b.encode([("Hi", "A red chair.")], hide=lambda text: [(0, 1)])
