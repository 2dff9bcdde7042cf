import csv
import json
import shutil
from collections import Counter

import pytest
import torch

from pointalign.analysis.facts_probe import (
    FactsProbeResult,
    FactsProbeSettings,
    FactTarget,
    build_targets,
    facts_probe,
    facts_probe_checkpoint,
    load_facts,
    ridge_predict,
    score_targets,
    split_objects,
)
from pointalign.checkpoint import save_checkpoint
from pointalign.errors import ConfigError, DataError

N_FIT, N_HELD, WIDTH = 90, 60, 32


def planted(seed: int = 0) -> tuple[torch.Tensor, list[str], list[str]]:
    """(2, N, WIDTH) features of N objects and their labels (3 values): layer 0 is noise, layer 1 carries the label
    along a random direction per value, under noise of the same size."""
    gen = torch.Generator().manual_seed(seed)
    n = N_FIT + N_HELD
    labels = torch.randint(0, 3, (n,), generator=gen)
    directions = torch.randn(3, WIDTH, generator=gen)
    noise = torch.randn(2, n, WIDTH, generator=gen)
    feats = noise.clone()
    feats[1] += 1.5 * directions[labels]
    return feats, [f"o{i:03d}" for i in range(n)], [["a", "b", "c"][int(v)] for v in labels]


def target(ids: list[str], values: list[str], name: str = "thing/legs") -> FactTarget:
    fit = dict(zip(ids[:N_FIT], values[:N_FIT]))
    held = dict(zip(ids[N_FIT:], values[N_FIT:]))
    return FactTarget("counts", name, fit, held)


def test_probe_recovers_a_planted_fact_and_not_a_shuffled_one():
    feats, ids, values = planted()
    pairs, correct, majority = score_targets(feats, ids, [target(ids, values)], ridge=1.0)
    assert len(pairs) == N_HELD and len(correct) == 2 and all(len(row) == N_HELD for row in correct)
    noise_acc, planted_acc = (sum(row) / N_HELD for row in correct)
    assert planted_acc > 0.9
    assert noise_acc < 0.6  # 3 values: chance is about 1/3
    shuffled = [values[i] for i in torch.randperm(len(values), generator=torch.Generator().manual_seed(1))]
    _, correct_shuffled, _ = score_targets(feats, ids, [target(ids, shuffled)], ridge=1.0)
    assert sum(correct_shuffled[1]) / N_HELD < 0.6
    assert 0.2 < sum(majority) / N_HELD < 0.6  # the majority baseline is about chance here too
    again = score_targets(planted()[0], ids, [target(ids, values)], ridge=1.0)[1:]  # closed form: no draws
    assert again == (correct, majority)


def test_ridge_predict_by_hand_and_the_penalty_matters():
    x = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 1.0], [0.9, 1.0]])  # the second feature is constant
    y = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[0.05, 1.0], [0.95, 1.0], [2.0, 7.0]])
    assert ridge_predict(x, y, test, ridge=0.1).tolist() == [0, 1, 1]
    unbalanced = torch.tensor([0, 1, 1, 1])
    # a huge penalty leaves only the intercept: every object gets the most common fit value
    assert ridge_predict(x, unbalanced, test, ridge=1e6).tolist() == [1, 1, 1]
    # scale-free: the same predictions on features 1000 times larger
    assert torch.equal(ridge_predict(1000 * x, y, 1000 * test, 0.1), ridge_predict(x, y, test, 0.1))


def test_ridge_predict_wide_and_tall_agree():
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(12, 40, generator=gen), torch.randn(5, 40, generator=gen)
    y = torch.arange(12) % 3
    wide = ridge_predict(x, y, t, 1.0)  # D > N: the dual system
    tall = ridge_predict(torch.cat([x, x]), torch.cat([y, y]), t, 1.0)  # duplicated rows: D > N still, same fit
    assert wide.shape == (5,)
    assert torch.equal(wide, tall)
    few = ridge_predict(x[:, :4], y, t[:, :4], 1.0)  # D < N: the primal system
    assert few.shape == (5,) and int(few.max()) < 3


def hand_facts() -> dict:
    def obj(cls, split, colour, counts=None, variants=None, proportion=None, has=None, parts=None):
        return {
            "class": cls,
            "split": split,
            "colour": colour,
            "counts": counts or {},
            "variants": variants or {},
            "proportion": proportion,
            "has": has or {},
            "part_colours": parts or {},
        }

    return {
        "c1": obj("chair", "train", "red", {"legs": 4}, {"back": "tall"}, ["tall", "short"], {"arms": True}),
        "c2": obj("chair", "train", "blue", {"legs": 3}, {"back": "tall"}, ["short", "tall"], {"arms": False}),
        "c3": obj("chair", "train", "red", {"legs": 4}, {"back": "tall"}, None, {"arms": True}, {"seat": "red"}),
        "c4": obj("chair", "val", "blue", {"legs": 3}, {"back": "low"}, ["tall", "short"], {"arms": True}),
        "c5": obj("chair", "test", "red", {"legs": 4}),
        "t1": obj("table", "train", "white", {"legs": 1}, parts={"top": "white"}),
        "t2": obj("table", "train", "black", {"legs": 4}, parts={"top": "grey"}),
        "t3": obj("table", "val", "white", {"legs": 4}, parts={"top": "grey"}),
    }


def test_targets_from_a_hand_written_facts_dict():
    facts = hand_facts()
    settings = FactsProbeSettings(min_fit=2)
    fit, held, words = split_objects(facts, settings)
    assert fit == ["c1", "c2", "c3", "t1", "t2"] and held == ["c4", "t3"] and "val split" in words
    kept, skipped = build_targets(facts, fit, held, min_fit=2)
    got = {(t.family, t.name): (t.fit, t.heldout) for t in kept}
    assert list(got) == [
        ("counts", "chair/legs"),
        ("counts", "table/legs"),
        ("colour", "colour"),
        ("part_colours", "table/top"),
        ("proportion", "chair/proportion"),
        ("has", "chair/arms"),
    ]
    assert got[("counts", "chair/legs")] == ({"c1": "4", "c2": "3", "c3": "4"}, {"c4": "3"})
    assert got[("colour", "colour")][0] == {"c1": "red", "c2": "blue", "c3": "red", "t1": "white", "t2": "black"}
    assert got[("proportion", "chair/proportion")] == ({"c1": "tall", "c2": "short"}, {"c4": "tall"})  # c3: None
    assert got[("has", "chair/arms")][1] == {"c4": "yes"}
    reasons = {(t.family, t.name): why for t, why in skipped}
    assert reasons[("variants", "chair/back")].startswith("a single value")  # all three fit chairs are tall
    assert reasons[("part_colours", "chair/seat")].startswith("1 fit objects")
    assert not any("c5" in {**t.fit, **t.heldout} for t in kept)  # test-split objects are neither fit nor scored
    # colourless objects leave the colour families only
    kept, skipped = build_targets(facts, fit, held, min_fit=2, colourless=frozenset({"t1", "t3"}))
    names = {(t.family, t.name) for t in kept}
    assert ("part_colours", "table/top") not in names and ("counts", "table/legs") in names
    assert "t1" not in next(t for t in kept if t.name == "colour").fit
    # a stricter rule keeps fewer targets
    kept, _ = build_targets(facts, fit, held, min_fit=4)
    assert [(t.family, t.name) for t in kept] == [("colour", "colour")]


def test_split_objects_train_holdout_is_seeded():
    facts = {f"{c}{i:02d}": {"class": c, "split": "train"} for c in "ab" for i in range(10)}
    facts["v"] = {"class": "a", "split": "val"}
    one = split_objects(facts, FactsProbeSettings(heldout="train", seed=0))
    assert one == split_objects(facts, FactsProbeSettings(heldout="train", seed=0))
    other = split_objects(facts, FactsProbeSettings(heldout="train", seed=1))
    assert one[1] != other[1]
    fit, held, words = one
    assert len(held) == 4 and sum(h.startswith("a") for h in held) == 2 and "v" not in held + fit
    assert not set(fit) & set(held) and len(fit) == 16 and "seed 0" in words
    capped, _, _ = split_objects(facts, FactsProbeSettings(fit_per_class=3))
    assert capped == ["a00", "a01", "a02", "b00", "b01", "b02"]
    with pytest.raises(DataError, match="no val-split"):
        split_objects({k: v for k, v in facts.items() if k != "v"}, FactsProbeSettings())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heldout": "test"},
        {"heldout_fraction": 1.0},
        {"fit_per_class": 1},
        {"min_fit": 1},
        {"ridge": 0.0},
        {"precision": "auto"},  # resolved by the caller, so that the cache key records what ran
    ],
)
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(ConfigError):
        FactsProbeSettings(**kwargs)


def test_bad_facts_are_clear_errors(tiny_data, tmp_path):
    (tmp_path / "anno_data").mkdir()
    facts_file = tmp_path / "anno_data" / "synth_object_facts.json"
    with pytest.raises(DataError, match="data synth"):
        load_facts(tmp_path)
    facts_file.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_facts(tmp_path)
    facts_file.write_text(json.dumps({"o1": {"class": "chair"}}))
    with pytest.raises(DataError, match="'o1' has no class or split"):
        load_facts(tmp_path)
    # no target passes the rule: an error before any checkpoint is read
    with pytest.raises(DataError, match="no fact target has 1000 fit objects"):
        facts_probe_checkpoint(tmp_path / "no-checkpoint", tiny_data, FactsProbeSettings(min_fit=1000, file_points=256))


def test_result_accuracy_correctness_and_round_trip():
    pairs = [("o1", "counts", "x/legs", "4"), ("o2", "counts", "x/legs", "3"), ("o1", "colour", "colour", "red")]
    result = FactsProbeResult(2, "the val split", pairs, [[0, 0, 1], [1, 0, 1], [1, 1, 0]], [1, 0, 0], [])
    assert result.families == ["counts", "colour"]
    assert result.accuracy() == {"counts": [0.0, 50.0, 100.0], "colour": [100.0, 100.0, 0.0]}
    assert result.majority_accuracy() == {"counts": 50.0, "colour": 0.0}
    assert result.n("counts") == 2
    assert result.correctness(-1) == {("o1", "counts", "x/legs"): 1, ("o2", "counts", "x/legs"): 1, pairs[2][:3]: 0}
    assert result.correctness(1, "colour") == {("o1", "colour", "colour"): 1}
    assert FactsProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_facts_probe_checkpoint_shapes(tiny_model, tiny_config, tiny_data, tmp_path):
    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    settings = FactsProbeSettings(min_fit=2, file_points=256)
    result = facts_probe_checkpoint(ckpt, tiny_data, settings)
    n_states = len(tiny_model.llm.get_base_model().model.layers) + 1
    assert len(result.correct) == n_states and all(len(row) == len(result.pairs) for row in result.correct)
    assert len(result.majority) == len(result.pairs) > 0
    assert {p[0] for p in result.pairs} <= {o for o, f in load_facts(tiny_data).items() if f["split"] == "val"}
    assert "colour" in result.families and "val split" in result.heldout
    assert result.align_layer == tiny_config.align.layer
    kept = {(t[0], t[1]): t[3] for t in result.targets if t[5] == "kept"}
    assert kept == Counter((p[1], p[2]) for p in result.pairs)  # every kept target is scored on its held-out objects
    assert all(t[2] >= 2 and t[4] >= 2 for t in result.targets if t[5] == "kept")


def test_facts_probe_writes_csvs_and_png(tiny_data, tmp_path):
    pairs = [("o1", "counts", "x/legs", "4"), ("o1", "colour", "colour", "red")]
    targets = [("counts", "x/legs", 12, 1, 2, "kept"), ("has", "x/arms", 1, 0, 1, "skipped: few")]
    fake = {
        "a": FactsProbeResult(1, "the val split", pairs, [[0, 1], [1, 1]], [0, 1], targets),
        "b": FactsProbeResult(1, "the val split", pairs, [[0, 0], [0, 1]], [0, 1], targets),
    }
    out = tmp_path / "facts"
    results = facts_probe(
        ["a", "b"], tiny_data, out, print_fn=lambda *_: None, probe_fn=lambda ckpt, *_: fake[str(ckpt)]
    )
    assert results == [fake["a"], fake["b"]]
    with open(out / "facts.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # checkpoints x families x layers
    first = rows[0]
    assert (first["checkpoint"], first["layer"], first["family"], first["n"]) == ("a", "0", "counts", "1")
    assert float(first["accuracy"]) == 0.0 and float(first["majority"]) == 0.0
    with open(out / "facts_objects.csv") as f:
        objects = list(csv.DictReader(f))
    assert [(r["checkpoint"], r["target"], r["layer_0"], r["layer_1"]) for r in objects] == [
        ("a", "x/legs", "0", "1"),
        ("a", "colour", "1", "1"),
        ("b", "x/legs", "0", "0"),
        ("b", "colour", "0", "1"),
    ]
    with open(out / "facts_targets.csv") as f:
        assert [(r["target"], r["fit_objects"], r["status"]) for r in csv.DictReader(f)] == [
            ("x/legs", "12", "kept"),
            ("x/arms", "1", "skipped: few"),
        ]
    assert (out / "facts.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_cli_with_facts(tiny_model, tiny_config, tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(ckpt), "--data-root", str(tiny_data), "--out", str(out)]
    args += ["--train-per-class", "1", "--test-limit", "4", "--file-points", "256", "--k", "1", "--facts"]
    assert main([*args, "--facts-heldout", "train", "--facts-seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "facts.csv" in printed and "facts probe" in printed
    with open(out / "facts.csv") as f:
        rows = list(csv.DictReader(f))
    n_states = len(tiny_model.llm.get_base_model().model.layers) + 1
    assert [int(r["layer"]) for r in rows] == list(range(n_states))  # 2 train objects per class: colour only
    assert {r["family"] for r in rows} == {"colour"} and "seed 3" in rows[0]["heldout"]
    assert all(0.0 <= float(r["accuracy"]) <= 100.0 for r in rows)
    assert (out / "facts.png").is_file() and (out / "facts_objects.csv").is_file()


def test_probe_cli_facts_without_facts_file_writes_nothing(tiny_model, tiny_config, tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "anno_data" / "synth_object_facts.json").unlink()
    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out), "--facts"]
    assert main([*args, "--file-points", "256"]) == 2
    assert "synth_object_facts.json" in capsys.readouterr().err
    assert not out.exists()
