"""``pointalign diagnose``: where does a model's class information stop reaching its answers?

It measures the same thing at each seam of the model, on the same objects:

- **probes**: a cosine 1-NN classifier and a seeded, L2-regularised linear (softmax) probe, fitted on labelled train
  objects and scored on the ModelNet40-format test split, on the point encoder's tokens (mean of the patch tokens,
  and the cls token), the Q-Former outputs and the LLM point tokens (mean over the queries, and all queries
  concatenated), and the mean point token at a few LLM layers;
- **the seam into the LLM**: the RMS of the point tokens against the RMS of the LLM's text embeddings, and how alike
  different objects' point tokens are (mean cosine between objects; spread across objects / norm of the mean);
- **class nouns**: the share of test objects for which, among the LLM input embeddings of the class names (each
  name's first token, lower-cased, with a leading space), the one closest by cosine to any of the object's point
  tokens is its own class's: how directly the point tokens name the class to an LLM that copies words; where the
  dataset names each val object's class (the embedded dataset's facts file) and its clouds carry colour, the same
  share on the val objects with their colours and with the colours zeroed (a gap: colour crowds the class out);
- **use**: the caption loss (nats per answer token) of val objects with their own cloud and with another object's
  cloud: a gap near 0 means the answer does not depend on the points;
- **attention**: per LLM layer, the share of the attention from the last prompt position (where the first answer
  token is predicted) that lands on the point tokens.

Train clouds lose their colours when the test clouds have none, as in ``pointalign probe``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pointalign.analysis.facts_probe import load_facts
from pointalign.analysis.probe import knn_accuracy, labelled_clouds, point_states, prompt_forward
from pointalign.data.readers import PointLLMFolder, read_annotations
from pointalign.data.synth import FACTS_FILE, VAL_GT_FILE
from pointalign.eval.tasks import PROMPTS
from pointalign.models.point_encoder import reduce_points
from pointalign.models.pointalign import PointAlignModel


@dataclass(frozen=True)
class SeamSettings:
    """What ``diagnose`` reads (one home for its defaults)."""

    train_per_class: int = 10  # labelled train objects per class for the probes
    test_limit: int | None = None  # test objects spread over the test split (None = all)
    caption_objects: int = 80  # val objects for the caption-loss gap
    llm_layers: tuple[int, ...] = (0, 7, 14, 21, -1)  # LLM layers probed (0 = input embeddings, -1 = after the norm)
    probe_steps: int = 300  # Adam steps of the linear probe
    probe_l2: float = 1e-3  # L2 weight of the linear probe
    file_points: int = 8192
    seed: int = 0


@dataclass
class SeamReport:
    probes: list[tuple[str, float, float]]  # (where, 1-NN accuracy %, linear-probe accuracy %)
    rms_point_tokens: float
    rms_text_embeddings: float
    mean_cosine_between_objects: float
    spread_over_mean_norm: float
    caption_loss_own_cloud: float
    caption_loss_other_cloud: float
    class_noun_accuracy: float = 0.0  # % of test objects whose point tokens lie nearest their own class name
    # the same on the val objects with their colours and with the colours zeroed; None without classes or colours
    class_noun_val: tuple[float, float] | None = None
    attention_to_points: list[float] = field(default_factory=list)  # per LLM layer (1..L)

    @property
    def caption_gap(self) -> float:
        return self.caption_loss_other_cloud - self.caption_loss_own_cloud


def linear_probe_accuracy(
    train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, steps: int = 300, l2: float = 1e-3, seed: int = 0
) -> float:
    """Accuracy (%) of a softmax-regression probe on standardised features: train (N, D) -> test (M, D)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    x, xt = (train - mean) / std, (test - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x @ w + b, train_y) + l2 * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == test_y).float().mean() * 100)


@torch.no_grad()
def seam_features(model: PointAlignModel, clouds: Tensor, batch_size: int = 16) -> dict[str, Tensor]:
    """Per object, the features each seam hands on: name -> (N, D)."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {k: [] for k in ("encoder", "encoder cls", "Q-Former", "Q-Former (all queries)")}
    out.update({"point tokens": [], "point tokens (all queries)": []})
    for i in range(0, len(clouds), batch_size):
        tokens = model.point_encoder(clouds[i : i + batch_size].to(device))  # (B, T, C)
        q = model.qformer(model.bridge(tokens))  # (B, Q, Dq)
        p = model.projector(q)  # (B, Q, D)
        out["encoder"].append(tokens[:, 1:].mean(1))
        out["encoder cls"].append(tokens[:, 0])
        out["Q-Former"].append(q.mean(1))
        out["Q-Former (all queries)"].append(q.flatten(1))
        out["point tokens"].append(p.mean(1))
        out["point tokens (all queries)"].append(p.flatten(1))
    return {k: torch.cat(v).float().cpu() for k, v in out.items()}


@torch.no_grad()
def caption_loss(model: PointAlignModel, clouds: Tensor, captions: list[str], batch_size: int = 16) -> float:
    """Mean next-token loss per answer token of the captioning prompt's answers, given ``clouds`` (N, P, F)."""
    model.eval()
    device = next(model.parameters()).device
    builder = model.builder
    total, count = 0.0, 0
    for i in range(0, len(captions), batch_size):
        items = [builder.encode([(PROMPTS[2], c)]) for c in captions[i : i + batch_size]]
        batch = builder.collate(items, "right").to(device)
        out = model(batch, points=clouds[i : i + batch_size].to(device))
        total += float(out.ntp_loss) * out.num_tokens
        count += out.num_tokens
    return total / count


@torch.no_grad()
def attention_to_points(model: PointAlignModel, clouds: Tensor) -> list[float]:
    """Per LLM layer, the mean share of attention from the last prompt position to the point tokens."""
    llm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    previous = llm.config._attn_implementation
    llm.set_attn_implementation("eager")  # only eager attention returns its weights
    try:
        batch, _, out = prompt_forward(model, clouds, PROMPTS[0], output_attentions=True)
    finally:
        llm.set_attn_implementation(previous)
    rows = torch.arange(len(clouds), device=batch.input_ids.device)[:, None]  # (B, 1)
    shares = []
    for att in out.attentions:  # (B, H, L, L)
        last = att[:, :, -1, :].float()  # (B, H, L): the last position attends
        shares.append(float(last.permute(0, 2, 1)[rows, batch.point_positions].sum(1).mean()))
    return shares


@torch.no_grad()
def class_noun_accuracy(model: PointAlignModel, tokens: Tensor, labels: Tensor, classes: list[str]) -> float:
    """% of objects whose point tokens (M, Q, D) lie nearest (cosine, best token) to the input embedding of their own
    class name's first word token (lower-cased, read with a leading space) among the ``classes``' (labels (M,) index
    ``classes``)."""
    tok = model.tokenizer

    def first_word_token(name: str) -> int:  # a byte-level tokenizer gives the leading space a token of its own
        ids = tok(" " + name.lower(), add_special_tokens=False)["input_ids"]
        return next((i for i in ids if tok.decode([i]).strip()), ids[0])

    first = [first_word_token(c) for c in classes]
    table = model.llm.get_input_embeddings().weight.detach().float().cpu()
    names = torch.nn.functional.normalize(table[torch.tensor(first)], dim=-1)  # (C, D)
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)  # (M, Q, D)
    best = (unit @ names.t()).max(dim=1).values  # (M, C): each name's best point token
    return 100.0 * float((best.argmax(-1) == labels).float().mean())


def class_noun_by_colour(
    model: PointAlignModel, root: Path, classes: list[str], num_points: int, file_points: int
) -> tuple[float, float] | None:
    """``class_noun_accuracy`` of the val objects with their colours and with the colours zeroed, or None when the
    dataset has no facts file naming their classes (among ``classes``) or their clouds have no colour."""
    if not (root / "anno_data" / FACTS_FILE).is_file():
        return None
    facts = load_facts(root)
    ids = [o for o, f in facts.items() if f.get("split") == "val" and f.get("class") in classes]
    if not ids:
        return None
    folder = PointLLMFolder(root, file_points)
    clouds = torch.stack([reduce_points(torch.from_numpy(folder.cloud(o)), num_points) for o in ids])  # (V, P, F)
    if clouds.shape[-1] < 6 or clouds[..., 3:].abs().max() == 0:
        return None
    labels = torch.tensor([classes.index(facts[o]["class"]) for o in ids])
    q = model.config.qformer.num_queries
    xyz_only = clouds.clone()
    xyz_only[..., 3:] = 0.0
    shares = []
    for c in (clouds, xyz_only):
        tokens = seam_features(model, c)["point tokens (all queries)"].view(len(ids), q, -1)  # (V, Q, D)
        shares.append(class_noun_accuracy(model, tokens, labels, classes))
    return shares[0], shares[1]


def diagnose(model: PointAlignModel, root: Path, settings: SeamSettings = SeamSettings()) -> SeamReport:
    """Every seam measurement of ``model`` on the dataset at ``root`` (see the module docstring)."""
    n = model.config.encoder.num_points
    train_pts, train_y, test, test_y, classes = labelled_clouds(
        root, n, settings.train_per_class, settings.test_limit, settings.file_points
    )  # (N, P, F), (N,), (M, P, F), (M,), class names

    def both(a: Tensor, b: Tensor) -> tuple[float, float]:
        knn = knn_accuracy(a, train_y, b, test_y, 1)
        return knn, linear_probe_accuracy(a, train_y, b, test_y, settings.probe_steps, settings.probe_l2, settings.seed)

    seams_train, seams_test = seam_features(model, train_pts), seam_features(model, test)
    probes = [(name, *both(seams_train[name], seams_test[name])) for name in seams_train]
    layers_train, layers_test = point_states(model, train_pts)[0], point_states(model, test)[0]  # (L+1, N, D)
    last = layers_train.shape[0] - 1
    for layer in sorted({last if k < 0 else min(k, last) for k in settings.llm_layers}):
        where = "LLM input embeddings" if layer == 0 else f"LLM layer {layer}"
        probes.append((where, *both(layers_train[layer], layers_test[layer])))

    tokens = seams_test["point tokens (all queries)"].view(len(test), model.config.qformer.num_queries, -1)
    text = model.llm.get_input_embeddings().weight.float()
    mean_tok = seams_test["point tokens"]  # (M, D)
    unit = torch.nn.functional.normalize(mean_tok, dim=-1)
    cos = unit @ unit.t()
    off_diagonal = cos[~torch.eye(len(unit), dtype=torch.bool)]
    centre = mean_tok.mean(0)

    folder = PointLLMFolder(root, settings.file_points)
    records = read_annotations(root / "anno_data" / VAL_GT_FILE)[: settings.caption_objects]
    val = torch.stack([reduce_points(torch.from_numpy(folder.cloud(r.object_id)), n) for r in records])
    captions = [r.turns[0][1] for r in records]
    shift = max(1, len(records) // 2)  # another object's cloud, far down the (class-ordered) list
    return SeamReport(
        probes=probes,
        rms_point_tokens=float(tokens.pow(2).mean(-1).sqrt().mean()),
        rms_text_embeddings=float(text.pow(2).mean(-1).sqrt().mean()),
        mean_cosine_between_objects=float(off_diagonal.mean()),
        spread_over_mean_norm=float((mean_tok - centre).norm(dim=-1).mean() / centre.norm()),
        class_noun_accuracy=class_noun_accuracy(model, tokens, test_y, classes),
        class_noun_val=class_noun_by_colour(model, root, classes, n, settings.file_points),
        caption_loss_own_cloud=caption_loss(model, val, captions),
        caption_loss_other_cloud=caption_loss(model, val.roll(shift, 0), captions),
        attention_to_points=attention_to_points(model, test[:16]),
    )


def format_report(name: str, r: SeamReport) -> str:
    """Markdown tables of one diagnosis."""
    lines = [f"## {name}", "", "| where | 1-NN accuracy (%) | linear probe (%) |", "|---|---:|---:|"]
    lines += [f"| {w} | {k:.1f} | {lin:.1f} |" for w, k, lin in r.probes]
    att = r.attention_to_points
    picks = sorted({0, len(att) // 4, len(att) // 2, 3 * len(att) // 4, len(att) - 1}) if att else []
    lines += [
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| RMS of the point tokens / of the text embeddings | {r.rms_point_tokens:.3f} / "
        f"{r.rms_text_embeddings:.3f} |",
        f"| mean cosine between two objects' point tokens | {r.mean_cosine_between_objects:.3f} |",
        f"| spread across objects / norm of the mean point token | {r.spread_over_mean_norm:.3f} |",
        f"| objects whose point tokens lie nearest their own class name (%) | {r.class_noun_accuracy:.1f} |",
        *(
            [
                "| the same, val objects with their colours / with the colours zeroed (%) | "
                f"{r.class_noun_val[0]:.1f} / {r.class_noun_val[1]:.1f} |"
            ]
            if r.class_noun_val is not None
            else []
        ),
        f"| caption loss, own cloud / another object's (nats per token) | {r.caption_loss_own_cloud:.3f} / "
        f"{r.caption_loss_other_cloud:.3f} (gap {r.caption_gap:.3f}) |",
        "| attention share on the point tokens (last prompt position), layers "
        + ", ".join(str(i + 1) for i in picks)
        + " | "
        + ", ".join(f"{att[i]:.2f}" for i in picks)
        + " |",
        "",
    ]
    return "\n".join(lines)
