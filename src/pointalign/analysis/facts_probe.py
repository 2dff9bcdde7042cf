"""``pointalign probe --facts``: how much fine-grained object information the point tokens keep at every LLM layer.

The class probe (``probe.py``) asks whether an object's point tokens still say *what* it is; the paper's claim is that
PointAlign also keeps the fine-grained geometry, which a class probe cannot see. This probe reads the embedded
dataset's per-object facts (``anno_data/synth_object_facts.json``) and asks, per layer, whether a linear read-out of
the mean point token recovers them.

Fact families and their targets (one classification problem each):

- ``counts``: one target per (class, part) key, e.g. ``chair/legs``; the value is the count (3 or 4 ...).
- ``colour``: one target over all objects, ``colour``; the value is the object's main colour.
- ``part_colours``: one target per (class, part), e.g. ``lamp/lampshades``; the value is that part's colour.
- ``variants``: one target per (class, part), e.g. ``airplane/wings``; the value is the variant (swept, straight).
- ``proportion``: one target per class, e.g. ``bed/proportion``; the value is the word that holds (wide, narrow).
- ``has``: one target per (class, optional part), e.g. ``car/roof rack``; the value is present or not.

The target rule: a target is kept when at least ``min_fit`` fit objects carry it, those show at least two different
values (a single-valued target has nothing to probe), and at least one held-out object carries it. Every other target
is skipped, with the reason written to ``facts_targets.csv``. Held-out values the fit objects never show stay in the
score (the probe cannot name them, so they count as wrong).

Objects: the probe is fitted on train-split objects and scored on held-out objects that have coloured clouds (colour
facts cannot be read from a colourless cloud, and the ModelNet40-format test file has none): the val split by default
(objects the model never trained on), or a seeded fraction of each class's train objects. Objects whose clouds have
no colour are left out of the colour families.

Features and probe: per layer, each object's Q point tokens are averaged into one vector (``probe.layer_features``,
the class probe's features); per target, the features of the fit objects are standardised and a ridge (L2) linear
classifier is solved in closed form (one-vs-rest least squares on one-hot targets, penalty ``ridge`` times the mean
squared norm of a standardised feature vector, so it does not depend on the layer's width or scale); the predicted
value is the argmax. No iteration, so the only randomness is the seeded choice of held-out objects.

Outputs per checkpoint: the accuracy per layer and family (micro-averaged over the family's (object, target) pairs),
the majority-value baseline per family (each target's most common fit value), and the 0/1 correctness of every
(object, target) pair at every layer, so two checkpoints probed on the same data and settings can be compared pair by
pair (a paired bootstrap over objects).

Notation: L = decoder blocks (L + 1 layers of states, 0 = input embeddings), N = objects, D = LLM width, M = scored
(object, target) pairs.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pointalign.data.synth import FACTS_FILE
from pointalign.errors import ConfigError, DataError

FAMILIES: tuple[str, ...] = ("counts", "colour", "part_colours", "variants", "proportion", "has")
COLOUR_FAMILIES: frozenset[str] = frozenset({"colour", "part_colours"})
TARGET_FIELDS = ("family", "target", "fit_objects", "heldout_objects", "fit_values", "status")


@dataclass(frozen=True)
class FactsProbeSettings:
    """What the facts probe reads and how (one home for its defaults)."""

    heldout: Literal["val", "train"] = "val"  # scored objects: the val split, or a seeded part of the train split
    heldout_fraction: float = 0.2  # with heldout="train": the share of each class's train objects held out
    fit_per_class: int | None = None  # fit objects per class (the first by object id; None = all)
    min_fit: int = 10  # a target needs at least this many fit objects (and two values among them)
    ridge: float = 0.1  # L2 penalty, in units of the mean squared norm of a standardised feature vector
    seed: int = 0  # the choice of held-out objects with heldout="train"
    file_points: int = 8192  # points in the data files
    precision: str = "fp32"  # the model's forward passes: "fp32" or "bf16" (autocast); the ridge fits run in fp32

    def __post_init__(self) -> None:
        if self.heldout not in ("val", "train"):
            raise ConfigError(f"facts probe heldout {self.heldout!r}: use 'val' or 'train'")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"facts probe heldout_fraction {self.heldout_fraction}: must lie in (0, 1)")
        if self.fit_per_class is not None and self.fit_per_class < 2:
            raise ConfigError(f"facts probe fit_per_class {self.fit_per_class}: use at least 2 (or None for all)")
        if self.min_fit < 2:
            raise ConfigError(f"facts probe min_fit {self.min_fit}: a target needs at least 2 fit objects")
        if self.ridge <= 0:
            raise ConfigError(f"facts probe ridge {self.ridge}: must be positive")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"facts probe precision {self.precision!r}: use 'fp32' or 'bf16'")


@dataclass(frozen=True)
class FactTarget:
    """One classification problem: a fact's value per fit object and per held-out object."""

    family: str  # one of FAMILIES
    name: str  # "chair/legs", "colour", "bed/proportion" ...
    fit: dict[str, str]  # object_id -> value
    heldout: dict[str, str]  # object_id -> value


@dataclass
class FactsProbeResult:
    """One checkpoint's facts probe. ``pairs[m]`` is scored at every layer: ``correct[layer][m]`` is 1 where the
    probe at that layer predicts the pair's value; ``majority[m]`` is 1 where the target's most common fit value is
    its value."""

    align_layer: int
    heldout: str  # which objects were scored, in words
    pairs: list[tuple[str, str, str, str]]  # (object_id, family, target, value) per scored pair, M of them
    correct: list[list[int]]  # (L + 1) x M, 0/1
    majority: list[int]  # M, 0/1
    # every target the facts offered: (family, target, fit objects, held-out objects, fit values, "kept" or
    # "skipped: <reason>")
    targets: list[tuple[str, str, int, int, int, str]] = field(default_factory=list)

    @property
    def families(self) -> list[str]:
        """The families with at least one scored pair, in FAMILIES order."""
        present = {p[1] for p in self.pairs}
        return [f for f in FAMILIES if f in present]

    def n(self, family: str) -> int:
        """Scored (object, target) pairs of ``family``."""
        return sum(p[1] == family for p in self.pairs)

    def accuracy(self) -> dict[str, list[float]]:
        """Family -> held-out accuracy (%) per layer (0 = input embeddings), over the family's pairs."""
        out = {}
        for family in self.families:
            idx = [m for m, p in enumerate(self.pairs) if p[1] == family]
            out[family] = [100.0 * sum(row[m] for m in idx) / len(idx) for row in self.correct]
        return out

    def majority_accuracy(self) -> dict[str, float]:
        """Family -> accuracy (%) of predicting each target's most common fit value (chance for the reader)."""
        out = {}
        for family in self.families:
            idx = [m for m, p in enumerate(self.pairs) if p[1] == family]
            out[family] = 100.0 * sum(self.majority[m] for m in idx) / len(idx)
        return out

    def correctness(self, layer: int, family: str | None = None) -> dict[tuple[str, str, str], int]:
        """(object_id, family, target) -> 0/1 at ``layer`` (negative counts from the last), optionally one family's
        pairs only: the per-object outcome for a paired comparison of two checkpoints."""
        row = self.correct[layer]
        return {(o, f, t): row[m] for m, (o, f, t, _) in enumerate(self.pairs) if family in (None, f)}

    def to_dict(self) -> dict:
        """JSON-ready form (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FactsProbeResult:
        return cls(
            align_layer=int(data["align_layer"]),
            heldout=data["heldout"],
            pairs=[tuple(p) for p in data["pairs"]],
            correct=[list(r) for r in data["correct"]],
            majority=list(data["majority"]),
            targets=[tuple(t) for t in data.get("targets", [])],
        )


def load_facts(root: Path) -> dict[str, dict]:
    """The embedded dataset's per-object facts, ``{object_id: {"class", "split", "colour", ...}}``."""
    path = Path(root) / "anno_data" / FACTS_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the facts probe needs the embedded dataset's per-object facts "
            "(written by `pointalign data synth`)"
        )
    try:
        facts = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(facts, dict) or not facts:
        raise DataError(f"{path}: expected a non-empty object of per-object facts")
    for oid, f in facts.items():
        if not isinstance(f, dict) or not {"class", "split"} <= f.keys():
            raise DataError(f"{path}: object {oid!r} has no class or split")
    return facts


def split_objects(facts: dict[str, dict], settings: FactsProbeSettings) -> tuple[list[str], list[str], str]:
    """(fit object ids, held-out object ids, the held-out objects in words).

    Fit objects are train-split objects (at most ``fit_per_class`` per class, the first by id); held-out objects are
    the val split, or with ``heldout="train"`` a seeded ``heldout_fraction`` of each class's train objects (at least
    one, never all).
    """
    by_class: dict[str, list[str]] = {}
    for oid in sorted(facts):
        if facts[oid]["split"] == "train":
            by_class.setdefault(facts[oid]["class"], []).append(oid)
    if settings.heldout == "val":
        held = sorted(oid for oid, f in facts.items() if f["split"] == "val")
        if not held:
            raise DataError(f"{FACTS_FILE}: no val-split objects to score (try heldout 'train')")
        pools = by_class
        words = f"the val split ({len(held)} objects)"
    else:
        rng = np.random.default_rng(settings.seed)
        held, pools = [], {}
        for cls, ids in by_class.items():
            if len(ids) < 2:
                pools[cls] = ids  # nothing to hold out of a single object
                continue
            order = [ids[i] for i in rng.permutation(len(ids))]
            n_held = min(len(ids) - 1, max(1, round(settings.heldout_fraction * len(ids))))
            held += sorted(order[:n_held])
            pools[cls] = sorted(order[n_held:])
        if not held:
            raise DataError(f"{FACTS_FILE}: no class has two train objects to hold one out")
        words = (
            f"a seeded {settings.heldout_fraction:.0%} of each class's train objects "
            f"(seed {settings.seed}, {len(held)} objects)"
        )
    fit = [oid for cls in sorted(pools) for oid in pools[cls][: settings.fit_per_class]]
    if not fit:
        raise DataError(f"{FACTS_FILE}: no train-split objects to fit the probe on")
    return fit, held, words


def _object_facts(f: dict) -> list[tuple[str, str, str]]:
    """(family, target name, value) of one object's facts."""
    cls = f["class"]
    out = [("counts", f"{cls}/{part}", str(n)) for part, n in f.get("counts", {}).items()]
    if f.get("colour") is not None:
        out.append(("colour", "colour", str(f["colour"])))
    out += [("part_colours", f"{cls}/{part}", str(c)) for part, c in f.get("part_colours", {}).items()]
    out += [("variants", f"{cls}/{part}", str(v)) for part, v in f.get("variants", {}).items()]
    if f.get("proportion"):
        out.append(("proportion", f"{cls}/proportion", str(f["proportion"][0])))
    out += [("has", f"{cls}/{part}", "yes" if present else "no") for part, present in f.get("has", {}).items()]
    return out


def build_targets(
    facts: dict[str, dict],
    fit_ids: list[str],
    heldout_ids: list[str],
    min_fit: int,
    colourless: frozenset[str] = frozenset(),
) -> tuple[list[FactTarget], list[tuple[FactTarget, str]]]:
    """The targets the rule keeps (module docstring), in FAMILIES then name order, and the skipped ones with the
    reason. Objects in ``colourless`` are left out of the colour families."""
    fit_vals: dict[tuple[str, str], dict[str, str]] = {}
    held_vals: dict[tuple[str, str], dict[str, str]] = {}
    for ids, into in ((fit_ids, fit_vals), (heldout_ids, held_vals)):
        for oid in ids:
            for family, name, value in _object_facts(facts[oid]):
                if family in COLOUR_FAMILIES and oid in colourless:
                    continue
                into.setdefault((family, name), {})[oid] = value
    kept, skipped = [], []
    for family, name in sorted(fit_vals.keys() | held_vals.keys(), key=lambda k: (FAMILIES.index(k[0]), k[1])):
        fit, held = fit_vals.get((family, name), {}), held_vals.get((family, name), {})
        target = FactTarget(family, name, fit, held)
        if len(fit) < min_fit:
            skipped.append((target, f"{len(fit)} fit objects (< {min_fit})"))
        elif len(set(fit.values())) < 2:
            skipped.append((target, f"a single value among the fit objects ({next(iter(fit.values()))})"))
        elif not held:
            skipped.append((target, "no held-out object"))
        else:
            kept.append(target)
    return kept, skipped


def ridge_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float) -> torch.Tensor:
    """Closed-form L2-regularised linear classifier on standardised features.

    Args:
        train_x: (N, D) fit features.
        train_y: (N,) class indices in [0, C).
        test_x: (M, D) features to classify.
        ridge: L2 penalty in units of the mean squared norm of a standardised fit row (scale- and width-free).

    Returns:
        (M,) predicted class indices: argmax of the one-vs-rest least-squares scores (ties -> the lower index).
    """
    x, t = train_x.double(), test_x.double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay zero after centring
    x, t = (x - mean) / std, (t - mean) / std  # (N, D), (M, D)
    n_classes = int(train_y.max()) + 1
    y = torch.nn.functional.one_hot(train_y.long(), n_classes).double()  # (N, C)
    y_mean = y.mean(dim=0)
    yc = y - y_mean
    lam = ridge * (float(x.pow(2).sum(dim=1).mean()) or 1.0)
    n, d = x.shape
    if d <= n:  # primal: (D, D) system
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=x.dtype), x.T @ yc)  # (D, C)
    else:  # dual: (N, N) system, w = X^T alpha
        w = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(n, dtype=x.dtype), yc)  # (D, C)
    return (t @ w + y_mean).argmax(dim=1)  # (M,)


def score_targets(
    features: torch.Tensor, object_ids: list[str], targets: list[FactTarget], ridge: float
) -> tuple[list[tuple[str, str, str, str]], list[list[int]], list[int]]:
    """Fit one probe per target and layer on the target's fit objects and score its held-out objects.

    Args:
        features: (L + 1, N, D) per-layer features of ``object_ids`` (any number of layers).
        object_ids: the N objects, in the order of ``features``' second axis.
        targets: from ``build_targets``.
        ridge: see ``ridge_predict``.

    Returns:
        pairs (M of (object_id, family, target, value)), correct ((L + 1) x M of 0/1) and majority (M of 0/1).
    """
    index = {oid: i for i, oid in enumerate(object_ids)}
    missing = [oid for t in targets for oid in (*t.fit, *t.heldout) if oid not in index]
    if missing:
        raise DataError(f"facts probe: no features for object {missing[0]!r}")
    pairs: list[tuple[str, str, str, str]] = []
    correct: list[list[int]] = [[] for _ in range(features.shape[0])]
    majority: list[int] = []
    for target in targets:
        values = sorted(set(target.fit.values()))
        fit_ids, held_ids = sorted(target.fit), sorted(target.heldout)
        fit_y = torch.tensor([values.index(target.fit[o]) for o in fit_ids])
        counts = Counter(target.fit.values())
        top = max(values, key=lambda v: counts[v])  # most common fit value; ties -> the first in sorted order
        truth = [target.heldout[o] for o in held_ids]
        pairs += [(o, target.family, target.name, v) for o, v in zip(held_ids, truth)]
        majority += [int(v == top) for v in truth]
        fit_idx = torch.tensor([index[o] for o in fit_ids])
        held_idx = torch.tensor([index[o] for o in held_ids])
        for layer in range(features.shape[0]):
            pred = ridge_predict(features[layer, fit_idx], fit_y, features[layer, held_idx], ridge)
            correct[layer] += [int(values[p] == v) for p, v in zip(pred.tolist(), truth)]
    return pairs, correct, majority


def facts_probe_checkpoint(
    ckpt: Path, root: Path, settings: FactsProbeSettings = FactsProbeSettings()
) -> FactsProbeResult:
    """One checkpoint's facts probe: per layer and family the held-out accuracy, per (object, target) the 0/1
    outcome, and the majority baseline (see the module docstring)."""
    from pointalign.analysis.probe import layer_features
    from pointalign.checkpoint import load_model
    from pointalign.data.readers import PointLLMFolder
    from pointalign.models.point_encoder import reduce_points

    facts = load_facts(root)
    fit_ids, held_ids, words = split_objects(facts, settings)
    folder = PointLLMFolder(root, settings.file_points)
    ids = fit_ids + held_ids
    raw = [torch.from_numpy(folder.cloud(o)) for o in ids]  # N x (P, 6)
    colourless = frozenset(o for o, c in zip(ids, raw) if not c[:, 3:].abs().max() > 0)
    targets, skipped = build_targets(facts, fit_ids, held_ids, settings.min_fit, colourless)
    if not targets:
        raise DataError(
            f"{root / 'anno_data' / FACTS_FILE}: no fact target has {settings.min_fit} fit objects with two values "
            f"and a held-out object ({len(fit_ids)} fit, {len(held_ids)} held-out objects)"
        )
    if colourless:
        words += f"; {len(colourless)} objects without colour are left out of the colour facts"
    model, cfg = load_model(ckpt, for_inference=True)
    clouds = torch.stack([reduce_points(c, cfg.encoder.num_points) for c in raw])  # (N, points, 6)
    features = layer_features(model, clouds, precision=settings.precision)  # (L + 1, N, D)
    pairs, correct, majority = score_targets(features, ids, targets, settings.ridge)
    table = [(t, "kept") for t in targets] + [(t, f"skipped: {why}") for t, why in skipped]
    table.sort(key=lambda row: (FAMILIES.index(row[0].family), row[0].name))
    rows = [(t.family, t.name, len(t.fit), len(t.heldout), len(set(t.fit.values())), s) for t, s in table]
    return FactsProbeResult(cfg.align.layer, words, pairs, correct, majority, rows)


def facts_probe(
    checkpoints: list[Path],
    root: Path,
    out: Path,
    settings: FactsProbeSettings = FactsProbeSettings(),
    names: list[str] | None = None,
    print_fn=print,
    probe_fn=facts_probe_checkpoint,
) -> list[FactsProbeResult]:
    """Probe every checkpoint (``probe_fn``, e.g. a caching wrapper of ``facts_probe_checkpoint``), then write under
    ``out``: ``facts.csv`` (checkpoint, layer, family, accuracy, majority, n, heldout), ``facts_objects.csv`` (one row
    per checkpoint and scored (object, target) pair: its value, the majority baseline's 0/1 and one 0/1 column per
    layer), ``facts_targets.csv`` (every target with its object and value counts, kept or why skipped) and
    ``facts.png``; returns the results."""
    load_facts(root)  # a root without facts fails here, before any model is loaded or anything is written
    labels = [names[n] if names else Path(c).name for n, c in enumerate(checkpoints)]
    results = [probe_fn(ckpt, root, settings) for ckpt in checkpoints]
    rows: list[dict] = []
    object_rows: list[dict] = []
    for label, result in zip(labels, results):
        acc, base = result.accuracy(), result.majority_accuracy()
        for family in result.families:
            n = result.n(family)
            rows += [
                {"checkpoint": label, "layer": layer, "family": family, "accuracy": a, "majority": base[family]}
                | {"n": n, "heldout": result.heldout}
                for layer, a in enumerate(acc[family])
            ]
            print_fn(
                f"facts probe {label} {family} (n={n}, majority {base[family]:.0f}): "
                + " ".join(f"{a:.0f}" for a in acc[family])
            )
        for m, (oid, family, target, value) in enumerate(result.pairs):
            layers = {f"layer_{layer}": row[m] for layer, row in enumerate(result.correct)}
            object_rows.append(
                {"checkpoint": label, "object_id": oid, "family": family, "target": target, "value": value}
                | {"majority": result.majority[m]}
                | layers
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "facts.csv", ["checkpoint", "layer", "family", "accuracy", "majority", "n", "heldout"], rows)
    n_layers = max((len(r.correct) for r in results), default=0)
    fields = ["checkpoint", "object_id", "family", "target", "value", "majority"]
    _write_csv(out / "facts_objects.csv", fields + [f"layer_{i}" for i in range(n_layers)], object_rows)
    _write_csv(
        out / "facts_targets.csv",
        list(TARGET_FIELDS),
        [dict(zip(TARGET_FIELDS, row)) for row in (results[0].targets if results else [])],
    )
    plot_facts(list(zip(labels, results)), out / "facts.png")
    return results


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def plot_facts(results: list[tuple[str, FactsProbeResult]], path: Path) -> None:
    """One panel per checkpoint: accuracy vs layer, one line per family, its majority baseline dotted, the
    alignment layer marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = max(1, len(results))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), dpi=100, sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (label, result) in zip(axes[0], results):
        base = result.majority_accuracy()
        for family, accs in result.accuracy().items():
            colour = colours(FAMILIES.index(family))
            ax.plot(range(len(accs)), accs, marker=".", color=colour, label=f"{family} (n={result.n(family)})")
            ax.axhline(base[family], color=colour, linestyle=":", linewidth=1)
        ax.axvline(result.align_layer, color="grey", linestyle="--", label=f"alignment layer ({result.align_layer})")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("LLM layer (0 = input embeddings)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("held-out accuracy (%), dotted: majority value")
    heldout = results[0][1].heldout if results else ""
    fig.suptitle(f"Object facts in the point tokens per layer; scored on {heldout}", fontsize=9)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
