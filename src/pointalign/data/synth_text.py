"""Text that is true of a generated object: captions, descriptions, Q&A and dialogues built from its facts.

Every statement is produced from ``Facts`` (and the measured dominant colour), never written by hand per object,
so a caption's leg count is the number of legs generated. Several templates per kind give variety.
"""

from __future__ import annotations

import numpy as np

from pointalign.data.synth_objects import Facts

NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]

# Plural count/part words and their singular; a key not here is singular already.
SINGULAR = {
    "legs": "leg",
    "shelves": "shelf",
    "drawers": "drawer",
    "wheels": "wheel",
    "steps": "step",
    "engines": "engine",
    "pillows": "pillow",
    "feet": "foot",
    "panels": "panel",
    "flowers": "flower",
    "strings": "string",
    "rows of keys": "row of keys",
    "lampshades": "lampshade",
    "candles": "candle",
    "arms": "arm",
    "leaf clusters": "leaf cluster",
    "speakers": "speaker",
    "knobs": "knob",
    "basins": "basin",
    "seat cushions": "seat cushion",
    "armrests": "armrest",
    "compartments": "compartment",
    "handles": "handle",
    "doors": "door",
    "white stripes": "white stripe",
    "wings": "wing",
    "keys": "key",
    "leaves": "leaf",
    "trousers": "trousers",
    "steps ": "step",
}

# Open-vocabulary names per class: any of them names the class correctly.
SYNONYMS: dict[str, list[str]] = {
    "airplane": ["airplane", "aeroplane", "plane", "aircraft", "jet", "airliner"],
    "bathtub": ["bathtub", "bath tub", "tub", "bath"],
    "bed": ["bed", "double bed", "single bed", "bunk"],
    "bench": ["bench", "park bench", "seat"],
    "bookshelf": ["bookshelf", "bookcase", "book shelf", "shelving unit", "shelf"],
    "bottle": ["bottle", "flask", "jar"],
    "bowl": ["bowl", "dish", "basin"],
    "car": ["car", "automobile", "vehicle", "sedan", "hatchback"],
    "chair": ["chair", "armchair", "office chair", "seat"],
    "cone": ["cone", "traffic cone", "safety cone", "pylon"],
    "cup": ["cup", "mug", "tumbler", "glass"],
    "curtain": ["curtain", "drape", "drapes", "curtains"],
    "desk": ["desk", "writing desk", "office desk", "workstation"],
    "door": ["door", "doorway", "front door"],
    "dresser": ["dresser", "chest of drawers", "drawer chest", "cabinet"],
    "flower pot": ["flower pot", "flowerpot", "potted flower", "planter", "pot"],
    "glass box": ["glass box", "display case", "glass case", "showcase", "vitrine"],
    "guitar": ["guitar", "electric guitar", "acoustic guitar", "bass guitar", "bass"],
    "keyboard": ["keyboard", "computer keyboard", "keypad"],
    "lamp": ["lamp", "floor lamp", "table lamp", "desk lamp", "light"],
    "laptop": ["laptop", "notebook computer", "notebook", "computer"],
    "mantel": ["mantel", "mantelpiece", "fireplace", "chimney piece"],
    "monitor": ["monitor", "computer monitor", "screen", "display", "television", "tv"],
    "night stand": ["night stand", "nightstand", "bedside table", "bedside cabinet"],
    "person": ["person", "human", "man", "woman", "figure", "people"],
    "piano": ["piano", "upright piano", "keyboard instrument"],
    "plant": ["plant", "potted plant", "houseplant", "tree", "shrub"],
    "radio": ["radio", "boombox", "stereo", "speaker"],
    "range hood": ["range hood", "cooker hood", "extractor hood", "exhaust hood", "kitchen hood"],
    "sink": ["sink", "washbasin", "basin", "wash basin"],
    "sofa": ["sofa", "couch", "settee", "loveseat"],
    "stairs": ["stairs", "staircase", "stairway", "steps"],
    "stool": ["stool", "bar stool", "seat"],
    "table": ["table", "dining table", "coffee table", "side table"],
    "tent": ["tent", "camping tent", "dome tent", "shelter"],
    "toilet": ["toilet", "lavatory", "wc", "commode"],
    "tv stand": ["tv stand", "tv cabinet", "media console", "entertainment unit", "television stand"],
    "vase": ["vase", "urn", "amphora", "jar"],
    "wardrobe": ["wardrobe", "closet", "armoire", "cupboard"],
    "xbox": ["xbox", "game console", "video game console", "console"],
}

BRIEF_INSTRUCTIONS = [
    "Summarize this 3D object briefly.",
    "What kind of object does this point cloud show?",
    "Give a short description of this 3D shape.",
    "What does this point cloud represent?",
    "Describe the object in a few words.",
    "Offer a brief summary of this 3D model.",
    "What object is this?",
    "Briefly, what is shown here?",
]
DETAILED_INSTRUCTIONS = [
    "Describe this 3D object in detail.",
    "Give a detailed description of this point cloud.",
    "Explain what this object looks like, part by part.",
    "Provide a thorough description of the shape and its parts.",
]


PLURAL_ONLY = {"trousers", "stairs"}
NOUNS = {"stairs": "flight of stairs"}  # noun phrases that take an article


def plural(key: str) -> bool:
    return key in PLURAL_ONLY or (key in SINGULAR and SINGULAR[key] != key)


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiox" else "a"


def count_phrase(key: str, n: int) -> str:
    if n == 1:
        return f"one {SINGULAR.get(key, key)}"
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {key}"


def has_phrase(key: str, present: bool) -> str:
    if not present:
        return f"no {key}"
    return key if plural(key) else f"{article(key)} {key}"


def be(key: str) -> str:
    return "are" if plural(key) else "is"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


class ObjectText:
    """Text generator for one object; template choices come from ``rng``.

    A variant keyed by the class name itself (``{"guitar": "acoustic"}``) is an adjective of the noun.
    """

    def __init__(
        self, cls: str, facts: Facts, colour: str, rng: np.random.Generator, aspect: float | None = None
    ) -> None:
        self.cls, self.facts, self.colour, self.rng = cls, facts, colour, rng
        self.aspect = aspect  # height / largest horizontal extent of the cloud
        self.noun = NOUNS.get(cls, cls)
        self.kind = facts.variants.get(cls)  # e.g. "acoustic"
        self.has = {k: v for k, v in facts.has.items() if k not in facts.counts}  # counts already say it

    def _pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def _noun_phrase(self, colour: bool = True, proportion: bool = True) -> str:
        words = []
        if proportion and self.facts.proportion:
            words.append(self.facts.proportion[0])
        if self.kind and " " not in self.kind:
            words.append(self.kind)
        if colour:
            words.append(self.colour)
        return " ".join([*words, self.noun])

    # -- statements ----------------------------------------------------------------------------------------------
    def _facts(self) -> list[tuple[str | None, str]]:
        """Every part fact as ``(phrase after "with", or None where it has none; its sentence)``."""
        f = self.facts
        out: list[tuple[str | None, str]] = [
            (count_phrase(k, n) if n > 0 else None, f"It has {count_phrase(k, n)}.") for k, n in f.counts.items()
        ]
        out += [(has_phrase(k, True) if v else None, f"It has {has_phrase(k, v)}.") for k, v in self.has.items()]
        out += [
            ((f"{v} {k}" if plural(k) else f"{article(v)} {v} {k}") if " " not in v else None, f"The {k} {be(k)} {v}.")
            for k, v in f.variants.items()
            if k != self.cls
        ]
        out += [(None, f"The {k} {be(k)} {v}.") for k, v in f.part_colours.items() if k != self.cls]
        return out

    @staticmethod
    def _with_tail(items: list[str]) -> str:
        return (" with " + (" and ".join(items[:2]) if len(items) > 1 else items[0])) if items else ""

    def caption(self) -> str:
        """A brief caption (<= 25 words)."""
        items = [w for w, _ in self._facts() if w is not None]
        self.rng.shuffle(items)
        phrase = self._noun_phrase()
        template = self._pick(["{a} {phrase}{tail}.", "{phrase}{tail}.", "this is {a} {phrase}{tail}."])
        text = template.format(a=article(phrase), phrase=phrase, tail=self._with_tail(items))
        return text[0].upper() + text[1:]

    def description(self) -> str:
        """A detailed description, 2-4 sentences: a summary sentence (what, which colour, two parts), how tall it is
        against its width, and up to two other parts' facts, none told twice."""
        facts = self._facts()
        self.rng.shuffle(facts)
        opening = [i for i, (w, _) in enumerate(facts) if w is not None][:2]
        phrase = self._noun_phrase()
        summary = f"This is {with_article(phrase)}{self._with_tail([facts[i][0] for i in opening])}."
        rest = [s for i, (_, s) in enumerate(facts) if i not in opening]
        shape = [self.aspect_sentence()] if self.aspect is not None else []
        return " ".join([summary, *shape, *rest[: 3 - len(shape)]])

    def aspect_sentence(self) -> str:
        """How tall the object is against its width, measured from the cloud."""
        if self.aspect > 1.25:
            return "It is taller than it is wide."
        if self.aspect < 0.8:
            return "It is wider than it is tall."
        return "It is about as tall as it is wide."

    def qa_pairs(self) -> list[tuple[str, str]]:
        """Every question this object's facts answer, with its answer."""
        f = self.facts
        pairs = [
            (
                self._pick(["What is this object?", "What is this?", "Identify the object."]),
                f"This is {with_article(self._noun_phrase(proportion=False))}.",
            ),
            (
                self._pick(["What is the main colour of the object?", "What colour is it mostly?"]),
                f"It is mostly {self.colour}.",
            ),
        ]
        for k, n in f.counts.items():
            pairs.append((f"How many {k} does it have?", f"It has {count_phrase(k, n)}."))
        for k, v in f.variants.items():
            if k == self.cls:
                pairs.append((f"What kind of {self.noun} is it?", f"It is {with_article(v)} {self.noun}."))
            else:
                question = f"What are the {k} like?" if plural(k) else f"What is the {k} like?"
                pairs.append((question, f"The {k} {be(k)} {v}."))
        for k, v in self.has.items():
            answer = f"Yes, it has {has_phrase(k, True)}." if v else f"No, it has {has_phrase(k, False)}."
            pairs.append((f"Does it have {has_phrase(k, True)}?", answer))
        for k, v in f.part_colours.items():
            if k != self.cls:
                pairs.append((f"What colour {be(k)} the {k}?", f"The {k} {be(k)} {v}."))
        if f.proportion:
            a, b = f.proportion if self.rng.uniform() < 0.5 else f.proportion[::-1]
            pairs.append((f"Is it {a} or {b}?", f"It is {f.proportion[0]}."))
        return pairs

    def single_round(self) -> tuple[str, str]:
        return self._pick(self.qa_pairs())

    def multi_round(self) -> list[tuple[str, str]]:
        pairs = self.qa_pairs()
        k = int(self.rng.integers(2, min(4, len(pairs)) + 1))
        idx = self.rng.permutation(len(pairs))[:k]
        return [pairs[i] for i in idx]
