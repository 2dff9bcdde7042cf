"""``pointalign probe``: how much class information the point tokens keep at every LLM layer (the paper's Figure 3).

For each object the model reads the generation prompt for "What is this?" with its point tokens spliced in; at every
layer ``l`` (0 = the input embeddings, ``l`` = the output of decoder block ``l``; the last entry is after the final
norm) the hidden states of the Q point tokens are **averaged into one vector**. A cosine K-nearest-neighbour
classifier (K = 1, and K = 10 by majority vote, ties broken by the summed similarity) maps each test object to the
labels of the labelled train objects; the accuracy per layer is written as CSV and plotted, one curve per checkpoint
and K, with the alignment layer marked.

Labelled train objects come from ``anno_data/synth_object_facts.json`` (the embedded dataset) or
``anno_data/converted_objects.json`` (``data convert``); test objects are the ModelNet40-format test file. When the
test clouds have no colour (ModelNet40's format), the train clouds' colours are zeroed too, so both sides of the
nearest-neighbour comparison come from the same kind of input.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import torch

from pointalign.data.readers import PointLLMFolder
from pointalign.errors import DataError
from pointalign.eval.tasks import load_items, reduce_points, spread
from pointalign.models.pointalign import PointAlignModel, position_ids

PROBE_PROMPT = "What is this?"


def labelled_train_objects(root: Path, per_class: int) -> list[tuple[str, str]]:
    """(object_id, class) of up to ``per_class`` train objects per class."""
    anno = root / "anno_data"
    if (anno / "synth_object_facts.json").is_file():
        facts = json.loads((anno / "synth_object_facts.json").read_text())
        items = [(oid, f["class"]) for oid, f in facts.items() if f["split"] == "train"]
    elif (anno / "converted_objects.json").is_file():
        items = [(oid, f["class"]) for oid, f in json.loads((anno / "converted_objects.json").read_text()).items()]
    else:
        raise DataError(f"{anno}: no labelled train objects (synth_object_facts.json or converted_objects.json)")
    counts: Counter = Counter()
    out = []
    for oid, cls in sorted(items):
        if counts[cls] < per_class:
            counts[cls] += 1
            out.append((oid, cls))
    return out


@torch.no_grad()
def layer_features(model: PointAlignModel, clouds: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """(L+1, N, D): per layer, the mean hidden state of each object's point tokens."""
    model.eval()
    device = next(model.parameters()).device
    item = model.builder.encode([], PROBE_PROMPT)
    outs = []
    for i in range(0, len(clouds), batch_size):
        chunk = clouds[i : i + batch_size].to(device)
        batch = model.builder.collate([item] * len(chunk), "left").to(device)
        embeds = model.embed(batch, model.encode_points(chunk).point_tokens)
        hidden = model.llm(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask),
            output_hidden_states=True,
            use_cache=False,
        ).hidden_states  # L+1 tensors (B, T, D)
        rows = torch.arange(len(chunk), device=device)[:, None]
        outs.append(torch.stack([h[rows, batch.point_positions].float().mean(dim=1) for h in hidden]).cpu())
    return torch.cat(outs, dim=1)  # (L+1, N, D)


def knn_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int) -> float:
    """Cosine K-NN accuracy (%) of ``test`` (M, D) against ``train`` (N, D)."""
    sims = torch.nn.functional.normalize(test, dim=-1) @ torch.nn.functional.normalize(train, dim=-1).t()  # (M, N)
    top = sims.topk(min(k, train.shape[0]), dim=1)
    preds = []
    for idx, val in zip(top.indices, top.values):
        votes: dict[int, list[float]] = {}
        for j, v in zip(idx.tolist(), val.tolist()):
            votes.setdefault(int(train_y[j]), []).append(v)
        preds.append(max(votes, key=lambda c: (len(votes[c]), sum(votes[c]))))
    return float((torch.tensor(preds) == test_y).float().mean() * 100)


def probe_checkpoint(
    ckpt: Path,
    root: Path,
    ks: tuple[int, ...] = (1, 10),
    train_per_class: int = 10,
    test_limit: int | None = None,
    file_points: int = 8192,
) -> tuple[dict[int, list[float]], int]:
    """One checkpoint's accuracy per layer for each K, and its alignment layer."""
    from pointalign.checkpoint import load_model

    model, cfg = load_model(ckpt, for_inference=True)
    folder = PointLLMFolder(root, file_points)
    train = labelled_train_objects(root, train_per_class)
    test_items = spread(load_items("cls-closed", root, cfg.encoder.num_points, file_points), test_limit)
    classes = sorted({it.label_name for it in test_items} | {c for _, c in train})
    train_clouds = torch.stack(
        [reduce_points(torch.from_numpy(folder.cloud(o)), cfg.encoder.num_points) for o, _ in train]
    )
    train_y = torch.tensor([classes.index(c) for _, c in train])
    test_clouds = torch.stack([it.points() for it in test_items])
    if test_clouds[..., 3:].abs().max() == 0:  # ModelNet-format test clouds have no colour: compare like with like
        train_clouds[..., 3:] = 0.0
    test_y = torch.tensor([classes.index(it.label_name) for it in test_items])
    f_train, f_test = layer_features(model, train_clouds), layer_features(model, test_clouds)
    accs = {k: [knn_accuracy(f_train[i], train_y, f_test[i], test_y, k) for i in range(f_train.shape[0])] for k in ks}
    return accs, cfg.align.layer


def probe(
    checkpoints: list[Path],
    root: Path,
    out: Path,
    ks: tuple[int, ...] = (1, 10),
    train_per_class: int = 10,
    test_limit: int | None = None,
    file_points: int = 8192,
    names: list[str] | None = None,
    print_fn=print,
    probe_fn=probe_checkpoint,
) -> list[dict]:
    """Probe every checkpoint (``probe_fn``, e.g. a caching wrapper of ``probe_checkpoint``); writes ``probe.csv``
    and ``probe.png`` under ``out``; returns the rows."""
    rows: list[dict] = []
    curves: list[tuple[str, int, list[float], int]] = []
    for n, ckpt in enumerate(checkpoints):
        label = names[n] if names else Path(ckpt).name
        by_k, align_layer = probe_fn(ckpt, root, ks, train_per_class, test_limit, file_points)
        for k, accs in by_k.items():
            rows += [{"checkpoint": label, "k": k, "layer": layer, "accuracy": a} for layer, a in enumerate(accs)]
            curves.append((label, k, accs, align_layer))
            print_fn(f"probe {label} K={k}: " + " ".join(f"{a:.0f}" for a in accs))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "probe.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["checkpoint", "k", "layer", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    plot_probe(curves, out / "probe.png")
    return rows


def plot_probe(curves: list[tuple[str, int, list[float], int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, k, accs, _ in curves:
        ax.plot(range(len(accs)), accs, marker=".", label=f"{label}, K={k}", linestyle="-" if k == 1 else "--")
    if curves:
        layer = curves[0][3]
        ax.axvline(layer, color="grey", linestyle=":", label=f"alignment layer ({layer})")
    ax.set_xlabel("LLM layer (0 = input embeddings)")
    ax.set_ylabel("KNN accuracy (%)")
    ax.set_title("Class information in the point tokens per layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
