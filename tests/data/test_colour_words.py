from pointalign.data.colour_words import COLOUR_WORDS, colour_spans, strip_colour_words
from pointalign.data.geometry import PALETTE


def test_colour_spans_find_whole_words_in_any_case():
    text = "A Red chair with grey legs; reddish, not redwood. It is mostly BEIGE."
    assert [text[a:b] for a, b in colour_spans(text)] == ["Red", "grey", "BEIGE"]
    assert colour_spans("A chair with four legs.") == []


def test_every_palette_colour_is_a_colour_word():
    assert set(PALETTE) <= COLOUR_WORDS


def test_strip_colour_words_keeps_the_rest():
    assert strip_colour_words("This is a red chair with brown legs. The seat is grey.") == (
        "This is a chair with legs. The seat is."
    )
    assert strip_colour_words("A chair.") == "A chair."
