"""Caption metrics as PointLLM's traditional evaluator computes them (REFERENCE_SPEC 6), per pair then averaged, x 100.

The paper's caption table (PointAlign's, MiniGPT-3D's and PointLLM's) comes from ``traditional_evaluator.py``; each
score here is that file's recipe, with the same libraries, so figures sit beside the published ones:

| key | column | produced by |
|---|---|---|
| ``sbert`` | Sentence-BERT | sentence-transformers cosine, all-mpnet-base-v2 by default (``pointalign.eval.mpnet``) |
| ``simcse`` | SimCSE | cosine of the ``pooler_output`` of a local sup-simcse-roberta-large (none is packaged) |
| ``bleu1`` ... ``bleu4`` | BLEU-1 ... BLEU-4 | NLTK ``sentence_bleu``, smoothing method 1 |
| ``rouge1``, ``rouge2``, ``rougeL`` | ROUGE-1/2/L | F of the ``rouge`` package's ``Rouge().get_scores`` |
| ``meteor`` | METEOR | NLTK ``meteor_score`` with WordNet 3.0 (Debian's ``wordnet-base``) |

PointLLM's quirks, kept on purpose (each function's docstring says which it has):
- an output that is exactly ``""`` is scored as ``"##"`` (a whitespace-only one is not, and is scored as it is);
- BLEU and METEOR tokens are ``str.split()`` tokens: punctuation stays on the word ("legs." is not "legs");
- BLEU-3 weights are (0.33, 0.33, 0.33, 0), which sum to 0.99, not 1;
- ``rouge`` splits each text into sentences at ".", is case-sensitive, counts each distinct n-gram (and, for
  ROUGE-L, each distinct word) once, and computes F = 2PR / (P + R + 1e-8).
"""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from pointalign.errors import ConfigError

DEFAULT_SBERT = "mpnet"  # the Sentence-BERT model: "mpnet" (the paper's), "minilm" (small fallback) or a folder
# Score keys in the paper's column order (SBERT, SimCSE, BLEU-1, ROUGE-L, METEOR), then the rest of PointLLM's.
COLUMNS = {
    "sbert": "SBERT",
    "simcse": "SimCSE",
    "bleu1": "BLEU-1",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
}
# NLTK sentence_bleu weights per BLEU-n, as PointLLM passes them (BLEU-3's sum to 0.99).
BLEU_WEIGHTS = {
    1: (1, 0, 0, 0),
    2: (0.5, 0.5, 0, 0),
    3: (0.33, 0.33, 0.33, 0),
    4: (0.25, 0.25, 0.25, 0.25),
}
EMPTY_OUTPUT = "##"  # what PointLLM scores in place of an empty model output

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def scored_output(hypothesis: str) -> str:
    """The text PointLLM scores for a model output: ``"##"`` in place of exactly ``""``, anything else as it is."""
    return EMPTY_OUTPUT if hypothesis == "" else hypothesis


def bleu(reference: str, hypothesis: str, n: int) -> float:
    """BLEU-``n`` x 100: NLTK ``sentence_bleu`` on ``str.split()`` tokens (case and punctuation kept), smoothing
    method 1, PointLLM's weights (``BLEU_WEIGHTS``: BLEU-3's are 0.33 each, summing to 0.99); ``""`` scores as "##".
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return 100.0 * sentence_bleu(
        [reference.split()],
        scored_output(hypothesis).split(),
        weights=BLEU_WEIGHTS[n],
        smoothing_function=SmoothingFunction().method1,
    )


def rouge(reference: str, hypothesis: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F x 100 from the ``rouge`` package, as PointLLM calls it.

    ``Rouge().get_scores(hypothesis, reference)`` splits each text into sentences at ".", and the sentences into words
    at spaces, case-sensitively and keeping other punctuation ("round," is not "round", "A" is not "a"); n-grams are
    counted as sets, so a repeated n-gram counts once; ROUGE-L is the summary-level union LCS over distinct words; F is
    2PR / (P + R + 1e-8). ``""`` scores as "##". Where the package has no sentence to score (an output or ground
    truth made only of "." and spaces, or an empty ground truth) it raises, and PointLLM's evaluator stops; here all
    three scores are 0.
    """
    from rouge import Rouge

    try:
        scores = Rouge().get_scores(scored_output(hypothesis), reference)[0]
    except ValueError:  # "Hypothesis is empty." / "Reference is empty." / "Collections must contain ..."
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    return {
        "rouge1": 100.0 * scores["rouge-1"]["f"],
        "rouge2": 100.0 * scores["rouge-2"]["f"],
        "rougeL": 100.0 * scores["rouge-l"]["f"],
    }


@lru_cache(maxsize=1)
def wordnet_reader():
    """NLTK's WordNet reader over a WordNet 3.0 database folder (Debian's ``wordnet-base`` by default).

    Debian ships the database without the ``lexnames`` index NLTK wants; it is written, from the package's own
    lexnames(5WN) page, into a copy of the database under the cache directory.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = Path(os.environ.get("POINTALIGN_WORDNET", DEBIAN_WORDNET))
    if not (source / "data.noun").is_file():
        raise ConfigError(
            f"METEOR needs WordNet: no database at {source} (install the Debian package wordnet-base, which "
            "`make setup` does, or set POINTALIGN_WORDNET to a WordNet dict folder)"
        )
    folder = source
    if not (source / "lexnames").is_file():
        from pointalign.models.llm import cache_dir

        folder = cache_dir() / "wordnet"
        folder.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():  # copies, not links: NLTK refuses files that resolve outside its root
            target = folder / f.name
            if f.is_file() and not target.exists():
                shutil.copyfile(f, folder / f".{f.name}.tmp")
                (folder / f".{f.name}.tmp").rename(target)
        if not (folder / "lexnames").is_file():
            if not LEXNAMES_MAN.is_file():
                raise ConfigError(f"{source}: no lexnames file and no {LEXNAMES_MAN} to make it from")
            rows = []
            for line in gzip.open(LEXNAMES_MAN, "rt", errors="replace"):
                parts = line.split()
                if len(parts) >= 2 and parts[0].isdigit() and parts[1].split(".")[0] in _CATEGORY:
                    rows.append(f"{parts[0]}\t{parts[1]}\t{_CATEGORY[parts[1].split('.')[0]]}\n")
            tmp = folder / ".lexnames.tmp"
            tmp.write_text("".join(rows))
            tmp.rename(folder / "lexnames")
    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))

    class LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # no cross-version (OMW) mapping: it would look for NLTK's own copy
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": not used by METEOR
        warnings.simplefilter("ignore", UserWarning)
        return LocalWordNet(str(folder), None)


def meteor(reference: str, hypothesis: str) -> float:
    """METEOR x 100: NLTK ``meteor_score`` on ``str.split()`` tokens (it lower-cases them; punctuation stays on the
    word), with WordNet 3.0 (``wordnet_reader``) for synonyms; ``""`` scores as "##"."""
    from nltk.translate.meteor_score import meteor_score

    return 100.0 * meteor_score([reference.split()], scored_output(hypothesis).split(), wordnet=wordnet_reader())


def sbert_label(sbert: str) -> str:
    """The name a table gives the Sentence-BERT model ``sbert``: the packaged model's name, else the folder."""
    return {"mpnet": "all-mpnet-base-v2", "minilm": "all-MiniLM-L6-v2"}.get(sbert, sbert)


def sbert_similarity(references: list[str], hypotheses: list[str], model: str = DEFAULT_SBERT) -> list[float]:
    """Per-pair Sentence-BERT cosine x 100, as PointLLM computes it: each (ground truth, output) pair encoded as one
    batch of two (so padding, and the float result, are the same) and compared with ``util.cos_sim``; ``""`` scores
    as "##". ``model`` is "mpnet" (all-mpnet-base-v2 from its PyPI parts), "minilm" or a sentence-transformers folder.
    """
    from sentence_transformers import util

    from pointalign.text_encoder import load_text_encoder

    encoder = load_text_encoder(model)
    out = []
    for ref, hyp in zip(references, hypotheses):  # encode runs under torch.inference_mode
        emb = encoder.encode([ref, scored_output(hyp)], convert_to_tensor=True, show_progress_bar=False)
        out.append(100.0 * util.cos_sim(emb[0], emb[1])[0][0].item())
    return out


def simcse_similarity(references: list[str], hypotheses: list[str], folder: str | None) -> list[float]:
    """Per-pair SimCSE cosine x 100, as PointLLM computes it: the ``pooler_output`` of each (ground truth, output) pair
    tokenized as one padded batch, compared in float64 (PointLLM uses scipy's cosine distance); ``""`` scores as "##".
    No SimCSE model is packaged: ``folder`` is a local sup-simcse-roberta-large (or another SimCSE) folder.
    """
    if not folder:
        raise ConfigError("SimCSE needs a local model folder (e.g. --simcse /models/sup-simcse-roberta-large)")
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"SimCSE model folder {folder}: no config.json")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    for ref, hyp in zip(references, hypotheses):
        enc = tok([ref, scored_output(hyp)], padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            u, v = model(**enc).pooler_output.double()
        out.append(100.0 * float(u @ v / (u.norm() * v.norm())))
    return out


def caption_scores(
    references: list[str], hypotheses: list[str], sbert: str = DEFAULT_SBERT, simcse: str | None = None
) -> dict[str, list[float]]:
    """Every metric of each (reference, hypothesis) pair, keyed and ordered as ``COLUMNS`` (``simcse`` only when a
    SimCSE folder is given): ``{"sbert": [...], "bleu1": [...], ...}``."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError("caption metrics: need as many hypotheses as references, at least one")
    pairs = list(zip(references, hypotheses))
    rouges = [rouge(r, h) for r, h in pairs]
    out = {
        "sbert": sbert_similarity(references, hypotheses, sbert),
        "simcse": simcse_similarity(references, hypotheses, simcse) if simcse is not None else None,
        **{f"bleu{n}": [bleu(r, h, n) for r, h in pairs] for n in BLEU_WEIGHTS},
        **{k: [s[k] for s in rouges] for k in ("rouge1", "rouge2", "rougeL")},
        "meteor": [meteor(r, h) for r, h in pairs],
    }
    return {k: out[k] for k in COLUMNS if out[k] is not None}


def caption_metrics(
    references: list[str], hypotheses: list[str], sbert: str = DEFAULT_SBERT, simcse: str | None = None
) -> dict[str, float]:
    """Mean of each metric over the pairs (the means of ``caption_scores``), in ``COLUMNS`` order."""
    return {k: sum(v) / len(v) for k, v in caption_scores(references, hypotheses, sbert, simcse).items()}


def metrics_table(means: dict[str, float], sbert: str) -> str:
    """A Markdown table of ``means`` in the paper's column order, the SBERT column naming its model."""
    keys = [k for k in COLUMNS if k in means]
    titles = [f"SBERT ({sbert_label(sbert)})" if k == "sbert" else COLUMNS[k] for k in keys]
    return "\n".join(
        [
            "| " + " | ".join(titles) + " |",
            "|" + "---:|" * len(keys),
            "| " + " | ".join(f"{means[k]:.2f}" for k in keys) + " |",
        ]
    )
