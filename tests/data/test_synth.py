import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pointalign.data.geometry import PALETTE
from pointalign.data.readers import PointLLMFolder, read_annotations, read_class_names, read_modelnet_dat
from pointalign.data.synth import CLASSES, COMPLEX_FILE, FACTS_FILE, VAL_GT_FILE, generate_object, synthesize
from pointalign.data.synth_objects import GENERATORS, Draw
from pointalign.data.synth_text import NOUNS, NUMBER_WORDS, SYNONYMS

PER_CLASS, POINTS = 4, 256  # per class: 1 val, 1 test, 2 train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    card = synthesize(out, PER_CLASS, POINTS, seed=3, val_per_class=1, test_per_class=1)
    return out, card


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_forty_modelnet_classes_with_synonyms():
    assert len(CLASSES) == 40 == len(set(CLASSES))
    assert CLASSES[0] == "airplane" and CLASSES[-1] == "xbox" and "flower pot" in CLASSES and "tv stand" in CLASSES
    assert set(SYNONYMS) == set(CLASSES) and all(SYNONYMS[c][0] == c for c in CLASSES)


def test_same_seed_same_bytes(dataset, tmp_path):
    out, _ = dataset
    again = synthesize(tmp_path / "again", PER_CLASS, POINTS, seed=3, val_per_class=1, test_per_class=1)
    assert again["objects"] == {"train": 80, "val": 40, "test": 40}
    assert digest(out) == digest(tmp_path / "again")
    synthesize(tmp_path / "other", PER_CLASS, POINTS, seed=4, val_per_class=1, test_per_class=1)
    assert digest(out) != digest(tmp_path / "other")


def test_splits_are_disjoint_and_balanced(dataset):
    out, card = dataset
    ids = {s: set((out / "anno_data" / f"{s}_object_ids.txt").read_text().split()) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    facts = json.loads((out / "anno_data" / FACTS_FILE).read_text())
    for split, expected in (("train", 2), ("val", 1), ("test", 1)):
        per_class = Counter(f["class"] for oid, f in facts.items() if oid in ids[split])
        assert set(per_class.values()) == {expected} and len(per_class) == 40
    assert card["records"]["val_gt"] == 40


def test_layout_round_trips_through_readers(dataset):
    out, _ = dataset
    folder = PointLLMFolder(out, POINTS)
    facts = json.loads((out / "anno_data" / FACTS_FILE).read_text())
    brief = folder.annotations("PointLLM_brief_description_660K_filtered.json")
    complex_ = folder.annotations(COMPLEX_FILE)
    val = folder.annotations(VAL_GT_FILE)
    assert len(brief) == 80 and len(val) == 40
    assert Counter(r.conversation_type for r in complex_) == {
        "detailed_description": 80,
        "single_round": 80,
        "multi_round": 80,
    }
    assert all(2 <= len(r.turns) <= 4 for r in complex_ if r.conversation_type == "multi_round")
    for rec in brief + val:
        cloud = folder.cloud(rec.object_id)
        assert cloud.shape == (POINTS, 6) and cloud.dtype == np.float32
        assert np.linalg.norm(cloud[:, :3], axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= cloud[:, 3:].min() and cloud[:, 3:].max() <= 1.0
        assert facts[rec.object_id]["class"] in rec.turns[0][1]
        assert len(rec.turns[0][1].split()) <= 25
    pts, labels = read_modelnet_dat(out / "modelnet40_data" / f"modelnet40_test_{POINTS}pts_fps.dat")
    names = read_class_names(out / "modelnet40_data" / "modelnet40_shape_names_modified.txt")
    assert names == CLASSES and len(pts) == 40 and sorted(labels) == list(range(40))
    assert all(p.shape == (POINTS, 6) for p in pts)
    normals = np.stack([p[:, 3:] for p in pts])
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)  # xyz + unit normals, as ModelNet40


ASPECTS = ("taller than it is wide", "wider than it is tall", "about as tall as it is wide")


def test_detailed_descriptions_open_with_a_summary_and_tell_each_fact_once(dataset):
    out, _ = dataset
    facts = json.loads((out / "anno_data" / FACTS_FILE).read_text())
    for rec in read_annotations(out / "anno_data" / COMPLEX_FILE, ("detailed_description",)):
        text, f = rec.turns[0][1], facts[rec.object_id]
        sentences = re.split(r"(?<=\.) ", text)
        assert 2 <= len(sentences) <= 4, text
        noun = NOUNS.get(f["class"], f["class"])
        assert sentences[0].startswith("This is ") and f"{f['colour']} {noun}" in sentences[0], text
        assert sentences[1] in {f"It is {s}." for s in ASPECTS}
        assert len(set(sentences)) == len(sentences), text
        for key, n in f["counts"].items():  # a count is told once: in the summary or in its own sentence
            if n > 1:
                assert len(re.findall(rf"\b{NUMBER_WORDS[n]} {re.escape(key)}\b", text)) <= 1, text
        for key, value in f["variants"].items():
            if key != f["class"]:
                told = rf"\b{re.escape(value)} {re.escape(key)}\b|The {re.escape(key)} \w+ {re.escape(value)}\."
                assert len(re.findall(told, text)) <= 1, text


def test_description_summary_names_the_parts_a_caption_would():
    obj = generate_object("chair", 12, 0, 256)  # brown; five wheels, armrests, a low backrest, brown seat, white legs
    summary, shape, *rest = re.split(r"(?<=\.) ", obj.text.description())
    assert summary == "This is a brown chair with a low backrest and five wheels."
    assert shape == "It is taller than it is wide."
    assert rest == ["The seat is brown.", "The legs are white."]  # facts the summary left out, none told twice


COUNT_EXCEPTIONS = {("keyboard", "rows of keys"), ("tv stand", "compartments")}


@pytest.mark.parametrize("cls", CLASSES)
def test_counts_in_text_equal_generated_parts(cls):
    c = CLASSES.index(cls)
    for i in range(12):
        parts, facts = GENERATORS[cls](Draw(np.random.default_rng([0, c, i, 0])))
        names = Counter(p.name for p in parts)
        for key, n in facts.counts.items():
            if (cls, key) not in COUNT_EXCEPTIONS:
                assert names[key] == n, (cls, i, key)
        obj = generate_object(cls, i, 0, 512)
        answers = dict(obj.text.qa_pairs())
        for key, n in obj.facts.counts.items():
            word = "one" if n == 1 else NUMBER_WORDS[n]
            assert answers[f"How many {key} does it have?"].startswith(f"It has {word} ")
        caption = obj.text.caption()
        for key, n in obj.facts.counts.items():
            for m in re.finditer(rf"\b(\w+) {re.escape(key)}\b", caption):
                if m.group(1) in NUMBER_WORDS:
                    assert NUMBER_WORDS.index(m.group(1)) == n, (cls, caption)


def test_keyboard_rows_and_tv_stand_compartments_match_geometry():
    for i in range(8):
        parts, facts = GENERATORS["keyboard"](Draw(np.random.default_rng([0, 18, i, 0])))
        rows = {round(float(p.triangles[..., 2].mean()), 4) for p in parts if p.name == "keys"}
        assert len(rows) == facts.counts["rows of keys"]
        parts, facts = GENERATORS["tv stand"](Draw(np.random.default_rng([0, 36, i, 0])))
        assert sum(p.name == "dividers" for p in parts) == facts.counts["compartments"] + 1


def _nearest_palette(rgb: np.ndarray) -> np.ndarray:
    names = list(PALETTE)
    ref = np.array([PALETTE[n] for n in names])
    return np.array(names)[np.argmin(((rgb[:, None] - ref[None]) ** 2).sum(-1), axis=1)]


@pytest.mark.parametrize("cls", ["chair", "table", "sofa", "lamp", "car", "vase", "airplane", "bench"])
def test_stated_main_colour_is_the_most_sampled(cls):
    for i in range(5):
        obj = generate_object(cls, i, 0, 4096)
        counts = Counter(_nearest_palette(obj.points[:, 3:].astype(np.float64)))
        assert counts.most_common(1)[0][0] == obj.colour or counts[obj.colour] >= 0.9 * counts.most_common(1)[0][1]
        assert obj.colour in obj.text.caption().lower()


@pytest.mark.parametrize("cls", ["bookshelf", "lamp", "bottle", "cone", "vase", "plant"])
def test_tall_and_short_are_told_apart_by_the_geometry(cls):
    ratios = {"tall": [], "short": []}
    for i in range(16):
        obj = generate_object(cls, i, 0, 2048)
        ext = obj.points[:, :3].max(0) - obj.points[:, :3].min(0)
        ratios[obj.facts.proportion[0]].append(ext[1] / max(ext[0], ext[2]))
    assert ratios["tall"] and ratios["short"]
    assert min(ratios["tall"]) > max(ratios["short"])


def test_refuses_too_few_objects_and_existing_folder(tmp_path):
    with pytest.raises(ValueError, match="needs at least"):
        synthesize(tmp_path / "x", 2, POINTS, val_per_class=1, test_per_class=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize(tmp_path / "full", PER_CLASS, POINTS, val_per_class=1, test_per_class=1)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_aspect_sentence_matches_the_cloud():
    for cls in ("bookshelf", "keyboard", "table", "person"):
        for i in range(4):
            obj = generate_object(cls, i, 0, 2048)
            ext = obj.points[:, :3].max(0) - obj.points[:, :3].min(0)
            ratio = ext[1] / max(ext[0], ext[2])
            sentence = obj.text.aspect_sentence()
            assert ("taller" in sentence) == (ratio > 1.25) and ("wider" in sentence) == (ratio < 0.8)
