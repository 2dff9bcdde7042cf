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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pointalign.data.readers import PointLLMFolder
from pointalign.errors import ConfigError, DataError
from pointalign.eval.tasks import load_items, spread
from pointalign.losses import alignment_loss
from pointalign.models.llm import decoder_layers, decoder_stack
from pointalign.models.point_encoder import reduce_points
from pointalign.models.pointalign import PointAlignModel, position_ids
from pointalign.models.projector import AlignmentProjector
from pointalign.training.precision import inference_autocast

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


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe reads and how (one home for its defaults)."""

    ks: tuple[int, ...] = (1, 10)  # neighbours of the KNN classifier
    train_per_class: int = 10  # labelled train objects per class
    test_limit: int | None = None  # test objects spread over the test split (None = all)
    file_points: int = 8192  # points in the data files
    decode_layers: tuple[int, ...] = ()  # layers (-1 = the last) whose point tokens get a fitted alignment projector
    decode_steps: int = 300
    precision: str = "fp32"  # the models' forward passes: "fp32" or "bf16" (autocast); the fits run in fp32

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"probe precision {self.precision!r}: use 'fp32' or 'bf16'")


@dataclass
class ProbeResult:
    accuracy: dict[int, list[float]]  # K -> KNN accuracy (%) per layer (0 = input embeddings)
    align_layer: int
    decode: dict[int, float] = field(default_factory=dict)  # layer -> held-out 1 - cos of a fitted projector


@torch.no_grad()
def prompt_forward(
    model: PointAlignModel,
    clouds: torch.Tensor,
    question: str = PROBE_PROMPT,
    through_points: bool = False,
    **llm_kwargs,
):
    """The LLM's decoder run once over the generation prompt of ``question`` with each of the (B, N, F) ``clouds``'
    point tokens spliced in: (the left-padded PromptBatch, the PointFeatures, the decoder's output with
    ``llm_kwargs``: hidden states or attentions, no logits, since no caller reads them).

    With ``through_points`` the decoder reads the prompt only up to the last point token: the decoder is causal, so
    the states at and before the point tokens are the same (to float rounding), for about a quarter fewer tokens
    (43 of the 56 of cpu-small's "What is this?" prompt). The batch's point positions stay valid; the output's
    sequence axis is the shorter one."""
    device = next(model.parameters()).device
    batch = model.builder.collate([model.builder.encode([], question)] * len(clouds), "left").to(device)
    feats = model.encode_points(clouds.to(device))
    embeds, mask = model.embed(batch, feats.point_tokens), batch.attention_mask  # (B, L, D), (B, L)
    if through_points:
        end = int(batch.point_positions.max()) + 1
        embeds, mask = embeds[:, :end], mask[:, :end]  # (B, end, D), (B, end)
    out = decoder_stack(model.llm)(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=position_ids(mask),
        use_cache=False,
        **llm_kwargs,
    )
    return batch, feats, out


@torch.no_grad()
def point_states(
    model: PointAlignModel,
    clouds: torch.Tensor,
    layers: tuple[int, ...] = (),
    batch_size: int = 16,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-layer mean point token (L+1, N, D); the point tokens at ``layers`` (len(layers), N, Q, D); and the
    Q-Former outputs (N, Q, Dq); the forward passes in ``precision`` ("fp32", or "bf16" autocast), the results fp32."""
    model.eval()
    device = next(model.parameters()).device
    pooled, kept, queries = [], [], []
    with inference_autocast(precision, device.type, model):  # each weight cast to bf16 once for all the batches
        for i in range(0, len(clouds), batch_size):
            chunk = clouds[i : i + batch_size]
            batch, feats, out = prompt_forward(model, chunk, through_points=True, output_hidden_states=True)
            hidden = out.hidden_states  # L+1 tensors (B, T, D)
            rows = torch.arange(len(chunk), device=device)[:, None]
            tokens = [h[rows, batch.point_positions].float() for h in hidden]  # L+1 x (B, Q, D)
            pooled.append(torch.stack([t.mean(dim=1) for t in tokens]).cpu())
            if layers:
                kept.append(torch.stack([tokens[layer] for layer in layers]).cpu())
            queries.append(feats.qformer_out.float().cpu())
    return torch.cat(pooled, dim=1), torch.cat(kept, dim=1) if layers else torch.empty(0), torch.cat(queries)


def layer_features(
    model: PointAlignModel, clouds: torch.Tensor, batch_size: int = 16, precision: str = "fp32"
) -> torch.Tensor:
    """(L+1, N, D): per layer, the mean hidden state of each object's point tokens."""
    return point_states(model, clouds, (), batch_size, precision)[0]


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


def decode_loss(
    train_h: torch.Tensor,
    train_q: torch.Tensor,
    test_h: torch.Tensor,
    test_q: torch.Tensor,
    steps: int = 300,
    batch_tokens: int = 1024,
    seed: int = 0,
) -> float:
    """How much of PointAlign's alignment target a layer's point tokens still carry: a fresh alignment projector
    (PointAlign's architecture) is fitted to map train tokens (N, Q, D) to their Q-Former outputs (N, Q, Dq); returns
    its alignment loss mean(1 - cos) on the held-out test tokens (M, Q, D) -> (M, Q, Dq). 0 = fully recoverable."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        proj = AlignmentProjector(train_h.shape[-1], train_q.shape[-1])
    x, y = train_h.flatten(0, 1), train_q.flatten(0, 1)  # (N*Q, D), (N*Q, Dq)
    scale = x.norm(dim=-1).mean().clamp_min(1e-6)  # deep layers reach norms in the hundreds: fit on a unit scale
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_tokens, len(x)),), generator=gen)
            loss = alignment_loss(proj(x[idx] / scale), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(alignment_loss(proj(test_h / scale), test_q))


def labelled_clouds(
    root: Path, num_points: int, train_per_class: int, test_limit: int | None, file_points: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The probes' objects: ``train_per_class`` labelled train clouds (N, P, F) and the test split's clouds (M, P, F)
    (``test_limit`` of them spread over it), with class indices (N,) and (M,) over the sorted class names (the fifth
    value). When the
    test clouds have no colour (ModelNet40's format), the train clouds' colours are zeroed: like is compared with
    like."""
    folder = PointLLMFolder(root, file_points)
    train = labelled_train_objects(root, train_per_class)
    test_items = spread(load_items("cls-closed", root, num_points, file_points), test_limit)
    classes = sorted({it.label_name for it in test_items} | {c for _, c in train})
    train_clouds = torch.stack([reduce_points(torch.from_numpy(folder.cloud(o)), num_points) for o, _ in train])
    test_clouds = torch.stack([it.points() for it in test_items])
    if test_clouds[..., 3:].abs().max() == 0:
        train_clouds[..., 3:] = 0.0
    train_y = torch.tensor([classes.index(c) for _, c in train])
    test_y = torch.tensor([classes.index(it.label_name) for it in test_items])
    return train_clouds, train_y, test_clouds, test_y, classes


def probe_checkpoint(ckpt: Path, root: Path, settings: ProbeSettings = ProbeSettings()) -> ProbeResult:
    """One checkpoint's KNN accuracy per layer for each K, its alignment layer, and (``settings.decode_layers``) the
    held-out loss of an alignment projector fitted at those layers."""
    from pointalign.checkpoint import load_model

    model, cfg = load_model(ckpt, for_inference=True)
    train_clouds, train_y, test_clouds, test_y, _ = labelled_clouds(
        root, cfg.encoder.num_points, settings.train_per_class, settings.test_limit, settings.file_points
    )
    n_states = len(decoder_layers(model.llm)) + 1
    layers = tuple(sorted({layer % n_states for layer in settings.decode_layers}))
    f_train, h_train, q_train = point_states(model, train_clouds, layers, precision=settings.precision)
    f_test, h_test, q_test = point_states(model, test_clouds, layers, precision=settings.precision)
    accs = {k: [knn_accuracy(f_train[i], train_y, f_test[i], test_y, k) for i in range(n_states)] for k in settings.ks}
    decode = {
        layer: decode_loss(h_train[j], q_train, h_test[j], q_test, settings.decode_steps)
        for j, layer in enumerate(layers)
    }
    return ProbeResult(accs, cfg.align.layer, decode)


def probe(
    checkpoints: list[Path],
    root: Path,
    out: Path,
    settings: ProbeSettings = ProbeSettings(),
    names: list[str] | None = None,
    print_fn=print,
    probe_fn=probe_checkpoint,
) -> list[dict]:
    """Probe every checkpoint (``probe_fn``, e.g. a caching wrapper of ``probe_checkpoint``); writes ``probe.csv``,
    ``probe.png`` and, with decode layers, ``decode.csv`` under ``out``; returns the accuracy rows."""
    rows: list[dict] = []
    decode_rows: list[dict] = []
    curves: list[tuple[str, int, list[float], int]] = []
    for n, ckpt in enumerate(checkpoints):
        label = names[n] if names else Path(ckpt).name
        result = probe_fn(ckpt, root, settings)
        for k, accs in result.accuracy.items():
            rows += [{"checkpoint": label, "k": k, "layer": layer, "accuracy": a} for layer, a in enumerate(accs)]
            curves.append((label, k, accs, result.align_layer))
            print_fn(f"probe {label} K={k}: " + " ".join(f"{a:.0f}" for a in accs))
        for layer, loss in result.decode.items():
            decode_rows.append({"checkpoint": label, "layer": layer, "alignment_loss": loss})
            print_fn(f"probe {label}: a fitted alignment projector at layer {layer} reaches 1 - cos {loss:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "probe.csv", ["checkpoint", "k", "layer", "accuracy"], rows)
    if decode_rows:
        _write_csv(out / "decode.csv", ["checkpoint", "layer", "alignment_loss"], decode_rows)
    plot_probe(curves, out / "probe.png")
    return rows


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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
