"""Caption metrics, per sample then averaged, all x 100 (REFERENCE_SPEC 6).

- BLEU-1: NLTK ``sentence_bleu`` on whitespace tokens, weights (1, 0, 0, 0), smoothing method 1.
- ROUGE-L: F1 of the longest common subsequence of lower-cased whitespace tokens.
- METEOR: NLTK ``meteor_score`` with WordNet 3.0 from the Debian package ``wordnet-base`` (``make setup`` installs it;
  ``$POINTALIGN_WORDNET`` may point at another WordNet database folder).
- Sentence-BERT: cosine of sentence embeddings, all-MiniLM-L6-v2 by default or any local sentence-transformers folder.
- SimCSE: cosine of the ``pooler_output`` of a local SimCSE model folder (e.g. sup-simcse-roberta-large); there is
  none packaged, so asking for it without a folder is an error.
An empty model output is scored as "##", as the reference does.
"""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from pointalign.errors import ConfigError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def _tokens(text: str) -> list[str]:
    return (text.strip() or "##").split()


def bleu1(reference: str, hypothesis: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ref, hyp = _tokens(reference), _tokens(hypothesis)
    return 100.0 * sentence_bleu([ref], hyp, weights=(1, 0, 0, 0), smoothing_function=SmoothingFunction().method1)


def rouge_l(reference: str, hypothesis: str) -> float:
    ref, hyp = _tokens(reference.lower()), _tokens(hypothesis.lower())
    # longest common subsequence by dynamic programming
    prev = [0] * (len(hyp) + 1)
    for r in ref:
        cur = [0]
        for j, h in enumerate(hyp):
            cur.append(prev[j] + 1 if r == h else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return 100.0 * 2 * p * r / (p + r)


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
    from nltk.translate.meteor_score import meteor_score

    return 100.0 * meteor_score([_tokens(reference)], _tokens(hypothesis), wordnet=wordnet_reader())


def sbert_similarity(references: list[str], hypotheses: list[str], model: str = "minilm") -> list[float]:
    """Per-pair cosine x 100."""
    from pointalign.text_encoder import embed_texts

    a = embed_texts([r.strip() or "##" for r in references], model)
    b = embed_texts([h.strip() or "##" for h in hypotheses], model)
    return (100.0 * (a * b).sum(dim=1)).tolist()


@torch.no_grad()
def simcse_similarity(references: list[str], hypotheses: list[str], folder: str | None) -> list[float]:
    if not folder:
        raise ConfigError("SimCSE needs a local model folder (e.g. --simcse /models/sup-simcse-roberta-large)")
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"SimCSE model folder {folder}: no config.json")
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok([t.strip() or "##" for t in texts], padding=True, truncation=True, return_tensors="pt")
        return torch.nn.functional.normalize(model(**enc).pooler_output, dim=-1)

    return (100.0 * (embed(references) * embed(hypotheses)).sum(dim=1)).tolist()


def caption_scores(
    references: list[str], hypotheses: list[str], sbert: str = "minilm", simcse: str | None = None
) -> dict[str, list[float]]:
    """Every metric of each (reference, hypothesis) pair, in order: ``{"bleu1": [...], "rougeL": ..., ...}``."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError("caption metrics: need as many hypotheses as references, at least one")
    pairs = list(zip(references, hypotheses))
    out = {
        "bleu1": [bleu1(r, h) for r, h in pairs],
        "rougeL": [rouge_l(r, h) for r, h in pairs],
        "meteor": [meteor(r, h) for r, h in pairs],
        "sbert": list(sbert_similarity(references, hypotheses, sbert)),
    }
    if simcse is not None:
        out["simcse"] = list(simcse_similarity(references, hypotheses, simcse))
    return out


def caption_metrics(
    references: list[str], hypotheses: list[str], sbert: str = "minilm", simcse: str | None = None
) -> dict[str, float]:
    """Mean of each metric over the pairs (the means of ``caption_scores``)."""
    return {k: sum(v) / len(v) for k, v in caption_scores(references, hypotheses, sbert, simcse).items()}
