"""Caption metrics: PointLLM's traditional-evaluator recipe, by hand and against the libraries called directly."""

from __future__ import annotations

import json
import math

import pytest

from pointalign.cli import main
from pointalign.errors import ConfigError
from pointalign.eval import metrics

# (ground truth, model output) pairs that exercise each quirk: punctuation kept on words, case, repeated words,
# an empty output ("##"), a whitespace-only output (scored as it is), multi-sentence text for rouge.
PAIRS = [
    ("brown round table, three legs", "A brown table with a round top and three legs."),
    ("a red chair with four legs", "A red chair. It has four legs and a red seat."),
    ("red red chair", "red chair"),
    ("a tall grey lamp", ""),
    ("a small blue car", "   "),
    ("A wooden bookshelf with three shelves.", "a wooden bookshelf with 3 shelves"),
]
TOL = 1e-6


def pointllm_scores(ground_truth: str, model_output: str, sbert_model) -> dict[str, float]:
    """One pair scored the way PointLLM's ``traditional_evaluator.py`` does it, libraries called directly."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge import Rouge
    from sentence_transformers import util

    if model_output == "":
        model_output = "##"
    smooth = SmoothingFunction().method1
    ref, hyp = [ground_truth.split()], model_output.split()
    r = Rouge().get_scores(model_output, ground_truth)[0]
    emb = sbert_model.encode([ground_truth, model_output])
    return {
        "sbert": util.cos_sim(emb[0], emb[1])[0][0].item() * 100,
        "bleu1": sentence_bleu(ref, hyp, weights=(1, 0, 0, 0), smoothing_function=smooth) * 100,
        "rougeL": r["rouge-l"]["f"] * 100,
        "meteor": meteor_score(ref, hyp, wordnet=metrics.wordnet_reader()) * 100,
        "bleu2": sentence_bleu(ref, hyp, weights=(0.5, 0.5, 0, 0), smoothing_function=smooth) * 100,
        "bleu3": sentence_bleu(ref, hyp, weights=(0.33, 0.33, 0.33, 0), smoothing_function=smooth) * 100,
        "bleu4": sentence_bleu(ref, hyp, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smooth) * 100,
        "rouge1": r["rouge-1"]["f"] * 100,
        "rouge2": r["rouge-2"]["f"] * 100,
    }


def write_results(path, pairs) -> None:
    rows = [{"object_id": f"obj{i}", "ground_truth": g, "model_output": o} for i, (g, o) in enumerate(pairs)]
    path.write_text(json.dumps({"prompt": "Caption this 3D model in detail.", "results": rows}))


def check_against_pointllm(tmp_path, capsys, sbert: str, folder) -> None:
    """``pointalign metrics --sbert`` on a result file equals PointLLM's recipe, per object and on average."""
    from sentence_transformers import SentenceTransformer

    result = tmp_path / "captions.json"
    write_results(result, PAIRS)
    assert main(["metrics", str(result), "--sbert", sbert]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(f"| SBERT ({metrics.sbert_label(sbert)}) | BLEU-1 | ROUGE-L | METEOR | BLEU-2 |")
    written = json.loads((tmp_path / "captions_evaluated_traditional.json").read_text())
    assert written["sbert_model"] == metrics.sbert_label(sbert) and written["total"] == len(PAIRS)
    model = SentenceTransformer(str(folder), device="cpu")
    expected = [pointllm_scores(g, o, model) for g, o in PAIRS]
    for row, want in zip(written["results"], expected):
        assert list(row["scores"]) == list(want)  # the paper's column order, then the rest
        assert row["scores"] == {k: pytest.approx(v, abs=TOL) for k, v in want.items()}
    for key in expected[0]:
        assert written[key] == pytest.approx(sum(e[key] for e in expected) / len(expected), abs=TOL)


def test_metrics_equal_pointllm_recipe_minilm(tmp_path, capsys):
    from pointalign.models.qformer import minilm_folder

    check_against_pointllm(tmp_path, capsys, "minilm", minilm_folder())


@pytest.mark.slow
def test_metrics_equal_pointllm_recipe_mpnet(tmp_path, capsys):
    from pointalign.eval.mpnet import mpnet_folder

    check_against_pointllm(tmp_path, capsys, "mpnet", mpnet_folder())


def test_rouge_by_hand_where_the_old_lcs_differed():
    # rouge: "round," is not "round" but "." only ends a sentence; case kept; distinct words counted once.
    # GT words {brown, round, table,, three, legs} (5); output {A, brown, table, with, a, round, top, and, three, legs}
    # (10); LCS brown round three legs = 4: P = 4/10, R = 4/5. Our old whitespace LCS kept "legs." and gave 40.0.
    got = metrics.rouge("brown round table, three legs", "A brown table with a round top and three legs.")
    f = 2 * 0.4 * 0.8 / (0.4 + 0.8 + 1e-8)
    assert got["rougeL"] == pytest.approx(100 * f, abs=TOL) and got["rougeL"] == pytest.approx(53.33, abs=0.01)
    assert got["rouge1"] == pytest.approx(100 * f, abs=TOL)
    # bigrams: 4 in the GT, 9 in the output, only (three, legs) shared: F = 2 (1/9)(1/4) / (1/9 + 1/4) = 2/13
    assert got["rouge2"] == pytest.approx(100 * 2 / 13, abs=1e-5)
    # repeated words count once: {red, chair} both sides, F = 1 (minus the 1e-8); the old LCS gave P = 1, R = 2/3: 80
    assert metrics.rouge("red red chair", "red chair")["rougeL"] == pytest.approx(100.0, abs=1e-5)
    # case-sensitive: "A" is not "a" (the old LCS lower-cased: 100)
    assert metrics.rouge("A red chair", "a red chair")["rougeL"] == pytest.approx(100 * 2 / 3, abs=1e-5)


def test_rouge_without_a_sentence_scores_zero():
    from rouge import Rouge

    with pytest.raises(ValueError):  # PointLLM's evaluator stops here
        Rouge().get_scores(".", "a chair")
    assert metrics.rouge("a chair", ".") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert metrics.rouge("", "a chair") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_bleu_by_hand():
    gt, out = "brown round table, three legs", "A brown table with a round top and three legs."
    # unigrams: brown, round, three of 10 match ("table" is not "table,", "legs." not "legs"); no brevity penalty
    assert metrics.bleu(gt, out, 1) == pytest.approx(30.0, abs=TOL)
    # no bigram matches: smoothing method 1 puts 0.1 / 9 for p2
    assert metrics.bleu(gt, out, 2) == pytest.approx(100 * math.sqrt(0.3 * 0.1 / 9), abs=TOL)
    # "a b c e" vs "a b c d": p1..p3 = 3/4, 2/3, 1/2; PointLLM's BLEU-3 weights 0.33 each (sum 0.99), not 1/3
    assert metrics.bleu("a b c d", "a b c e", 3) == pytest.approx(100 * 0.25**0.33, abs=TOL)
    assert metrics.bleu("a b c d", "a b c e", 3) != pytest.approx(100 * 0.25 ** (1 / 3), abs=1e-3)
    assert metrics.bleu("a b c d", "a b c d", 4) == pytest.approx(100.0, abs=TOL)
    # BLEU is case-sensitive
    assert metrics.bleu("A chair", "a chair", 1) == pytest.approx(50.0, abs=TOL)


def test_empty_and_blank_outputs():
    assert metrics.scored_output("") == "##" and metrics.scored_output("  ") == "  "
    # "##" shares no unigram with the GT: NLTK returns 0; a blank output has no tokens at all: 0 too
    assert metrics.bleu("a red chair", "", 1) == 0.0 and metrics.bleu("a red chair", "   ", 1) == 0.0
    assert metrics.meteor("a red chair", "") == 0.0
    assert metrics.rouge("a red chair", "   ") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_meteor_by_hand():
    # all 3 words match in one chunk: Fmean = 1, penalty 0.5 (1/3)^3
    assert metrics.meteor("a red chair", "a red chair") == pytest.approx(100 * (1 - 0.5 / 27), abs=TOL)
    # lower-cased by NLTK; WordNet: sofa and couch share a synset
    assert metrics.meteor("A red chair", "a red chair") == pytest.approx(100 * (1 - 0.5 / 27), abs=TOL)
    assert metrics.meteor("a big red sofa", "a big red couch") > metrics.meteor("a big red sofa", "a big red box")


def test_caption_scores_order_and_means():
    refs, hyps = [g for g, _ in PAIRS[:3]], [o for _, o in PAIRS[:3]]
    per = metrics.caption_scores(refs, hyps, sbert="minilm")
    assert list(per) == ["sbert", "bleu1", "rougeL", "meteor", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2"]
    assert all(len(v) == 3 for v in per.values())
    assert per["rougeL"][0] == pytest.approx(metrics.rouge(refs[0], hyps[0])["rougeL"])
    means = metrics.caption_metrics(refs, hyps, sbert="minilm")
    assert means == {k: pytest.approx(sum(v) / 3) for k, v in per.items()}
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        metrics.caption_scores(["a"], ["a", "b"])
    with pytest.raises(ConfigError, match="needs a local model folder"):
        metrics.simcse_similarity(["a"], ["b"], None)


def test_metrics_table_names_the_sbert_model():
    means = {"sbert": 50.0, "simcse": 51.0, "bleu1": 20.0, "rougeL": 21.0, "meteor": 22.0, "bleu4": 1.0}
    lines = metrics.metrics_table(dict(reversed(means.items())), "mpnet").splitlines()
    assert lines[0] == "| SBERT (all-mpnet-base-v2) | SimCSE | BLEU-1 | ROUGE-L | METEOR | BLEU-4 |"
    assert lines[2] == "| 50.00 | 51.00 | 20.00 | 21.00 | 22.00 | 1.00 |"
    assert "SBERT (/models/sbert)" in metrics.metrics_table(means, "/models/sbert")
    assert metrics.sbert_label("minilm") == "all-MiniLM-L6-v2"


def test_metrics_cli_bad_inputs_write_nothing(tmp_path, capsys):
    result = tmp_path / "captions.json"
    write_results(result, PAIRS[:2])
    out = tmp_path / "captions_evaluated_traditional.json"
    assert main(["metrics", str(result), "--sbert", str(tmp_path / "no-model")]) == 2
    assert "no sentence-transformers folder" in capsys.readouterr().err and not out.exists()
    assert main(["metrics", str(result), "--sbert", "minilm", "--simcse", str(tmp_path / "nope")]) == 2
    assert "SimCSE model folder" in capsys.readouterr().err and not out.exists()
    assert main(["metrics", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err and not (tmp_path / "missing_evaluated_traditional.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))
