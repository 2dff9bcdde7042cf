"""``precision: auto``: time one representative matmul in fp32 and under bf16 autocast, keep bf16 only if it wins.

Whether bf16 autocast pays off depends on the host, not the model: on one CPU of the kind this project runs on it
makes the cpu-small LLM's MLP matmul 3.8x faster, on another of the same kind (whose flags list avx512_bf16 but
where torch's kernels report only AVX512) 1.8x slower. So a stage with ``precision: auto`` measures at start-up, on
its own device: a Linear of the cpu-small LLM's MLP width on a batch of eight 85-token sequences, forward and
backward, a few warm-up rounds and then the fastest of several, the two precisions alternating (the fastest round
is the one least disturbed by other work on a busy host; a fraction of a second in all). bf16 is chosen only when it
is faster by ``BF16_MARGIN``. The measurement is cached per process and device, so the stages of one process
measure once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pointalign.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from pointalign.training.distributed import DistInfo

Resolved = Literal["fp32", "bf16"]

BF16_MARGIN = 0.10  # bf16 must take at most 1 / (1 + margin) of fp32's time, i.e. be >= 10 % faster
PROBE_ROWS = 680  # tokens of a cpu-small training batch: 8 sequences of 85 tokens
PROBE_IN = 576  # SmolLM2-135M's width (the cpu-small LLM)
PROBE_OUT = 1536  # its MLP's intermediate width
PROBE_WARMUP = 2  # untimed rounds of each precision (kernel selection, allocator)
PROBE_REPEATS = 10  # timed rounds of each precision; the fastest is kept


@dataclass(frozen=True)
class PrecisionChoice:
    """What a stage runs in, and why."""

    chosen: Resolved
    fp32_ms: float | None  # fastest forward+backward time of the probe matmul; None when not measured
    bf16_ms: float | None
    reason: str

    def describe(self) -> str:
        """One log line: the choice, the reason and both timings."""
        line = f"precision auto -> {self.chosen}: {self.reason}"
        if self.fp32_ms is not None and self.bf16_ms is not None:
            line += (
                f" (Linear {PROBE_ROWS}x{PROBE_IN}->{PROBE_OUT} forward+backward: fp32 {self.fp32_ms:.2f} ms, "
                f"bf16 {self.bf16_ms:.2f} ms)"
            )
        return line


_MEASURED: dict[str, PrecisionChoice] = {}  # str(device) -> the auto decision, once per process


def choose_precision(
    fp32_ms: float | None, bf16_ms: float | None, supported: bool, where: str = "", margin: float = BF16_MARGIN
) -> PrecisionChoice:
    """The decision from the two timings: bf16 only when supported and faster than fp32 by ``margin``.

    Args:
        fp32_ms: Fastest probe time in fp32 (None when bf16 is unsupported and nothing was timed).
        bf16_ms: Fastest probe time under bf16 autocast.
        supported: False where the device has no bf16 (an older GPU); fp32 then, whatever the timings.
        where: The device (and CPU capability) for the reason text.
        margin: bf16 must be at least ``1 + margin`` times faster.
    """
    on = f" on {where}" if where else ""
    if not supported:
        return PrecisionChoice("fp32", fp32_ms, bf16_ms, f"bf16 is not supported{on}")
    if fp32_ms is None or bf16_ms is None:
        raise ValueError("choose_precision: both timings are needed where bf16 is supported")
    speedup = fp32_ms / bf16_ms
    if speedup >= 1.0 + margin:
        return PrecisionChoice("bf16", fp32_ms, bf16_ms, f"bf16 is {speedup:.2f}x faster than fp32{on}")
    if speedup >= 1.0:
        why = f"bf16 is only {speedup:.2f}x faster than fp32{on}, under the {1.0 + margin:.2f}x it must gain"
    else:
        why = f"bf16 is {1.0 / speedup:.2f}x slower than fp32{on}"
    return PrecisionChoice("fp32", fp32_ms, bf16_ms, why)


def device_name(device: torch.device) -> str:
    """``cpu (AVX512)`` (torch's kernel capability) or ``cuda:0 (NVIDIA H200)``, for the log line."""
    import torch

    if device.type == "cpu":
        return f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast on this device: always on CPU (emulated where the kernels lack it), on CUDA if the GPU has it."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def time_probe(device: torch.device, warmup: int = PROBE_WARMUP, repeats: int = PROBE_REPEATS) -> tuple[float, float]:
    """Fastest forward+backward time (ms) of the probe Linear in fp32 and under bf16 autocast, alternating."""
    import torch

    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(PROBE_IN, PROBE_OUT).to(device)
    x = torch.randn(PROBE_ROWS, PROBE_IN, generator=generator).to(device).requires_grad_(True)  # (L, D)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def once(bf16: bool) -> float:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        sync()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)  # (L, PROBE_OUT)
        y.float().square().mean().backward()
        sync()
        return (time.perf_counter() - t) * 1000.0

    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(warmup + repeats):
        for bf16 in (False, True):
            elapsed = once(bf16)
            if i >= warmup:
                times[bf16].append(elapsed)
    return min(times[False]), min(times[True])


def auto_precision(device: torch.device) -> PrecisionChoice:
    """The ``auto`` decision for ``device``: measured on the first call in this process, then cached."""
    key = str(device)
    if key not in _MEASURED:
        where = device_name(device)
        if bf16_supported(device):
            fp32_ms, bf16_ms = time_probe(device)
            _MEASURED[key] = choose_precision(fp32_ms, bf16_ms, True, where)
        else:
            _MEASURED[key] = choose_precision(None, None, False, where)
    return _MEASURED[key]


def requested_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """``fp32``/``bf16`` as asked, or for ``auto`` this device's measured choice (one process; evaluation and the
    probes use it directly, a training stage through ``resolve_precision``)."""
    if requested in ("fp32", "bf16"):
        return PrecisionChoice("bf16" if requested == "bf16" else "fp32", None, None, "set by the config")
    if requested != "auto":
        raise ValueError(f"precision: 'fp32', 'bf16' or 'auto', got {requested!r}")
    return auto_precision(device)


def autocast(chosen: Resolved, device_type: str) -> contextlib.AbstractContextManager:
    """The forward pass's context for ``chosen``: bf16 autocast, or nothing for fp32."""
    import torch

    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def llm_attention(chosen: Resolved, device_type: str) -> str:
    """The LLM's attention implementation for forward passes in ``chosen`` precision on ``device_type``: "eager"
    (explicit matmuls and softmax) under bf16 autocast on a CPU, where torch's fused CPU attention kernel is much the
    slower, its backward above all (a cpu-small stage-1b step 1.25x faster eager; in fp32 eager is 3 % slower:
    ``python benchmarks/llm_step.py [--precision fp32]``); "sdpa", transformers' default, everywhere else."""
    return "eager" if chosen == "bf16" and device_type == "cpu" else "sdpa"


def set_llm_attention(module: torch.nn.Module, implementation: str) -> str | None:
    """Give ``module.llm`` (a transformers model, LoRA-wrapped or not) the attention ``implementation``; returns the
    one it had, or None (and changes nothing) when ``module`` has no such LLM."""
    llm = getattr(module, "llm", None)
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    if base is None or not hasattr(base, "set_attn_implementation"):
        return None
    previous = base.config._attn_implementation
    if previous != implementation:
        base.set_attn_implementation(implementation)
    return previous


@contextlib.contextmanager
def inference_autocast(chosen: Resolved, device_type: str, module: torch.nn.Module) -> Iterator[None]:
    """``autocast`` for many gradient-free forward passes of ``module`` (evaluation, probes): the same results, each
    weight cast to bf16 once for the whole region instead of at every use.

    bf16 autocast casts an fp32 weight at every op that uses it and keeps the cast only for tensors that require
    grad (its cast cache), so a frozen or inference model pays the cast of all its weights at every forward step
    (every generated token). Here every float parameter is marked as requiring grad for the region, so the cache
    holds the casts; gradients stay off (the region runs under ``torch.no_grad``) and the marks are restored after.
    For fp32 this is ``torch.no_grad`` alone. The region also runs the LLM with ``llm_attention``'s implementation
    and puts the previous one back after."""
    import torch

    if chosen == "fp32":
        with torch.no_grad():
            yield
        return
    params = [p for p in module.parameters() if p.is_floating_point()]
    marks = [p.requires_grad for p in params]
    previous = set_llm_attention(module, llm_attention(chosen, device_type))
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    finally:
        for p, mark in zip(params, marks):
            p.requires_grad_(mark)
        if previous is not None:
            set_llm_attention(module, previous)


class FrozenCasts:
    """bf16 training steps with each frozen fp32 Linear weight of ``module`` held as its bf16 cast.

    Autocast casts an fp32 weight to bf16 at every op that uses it and caches the cast only for tensors that require
    grad, so in a stage whose base LLM is frozen every step re-casts all of its Linear weights (the cpu-small LLM:
    106 M). The cast autocast would make is a fixed function of a frozen weight, so holding it for the stage gives the
    same matmuls, the same losses and the same gradients of the trainable weights, without the per-step casts.

    ``hold()`` swaps each such weight's data for its bf16 copy (once; later calls do nothing until a ``release()``),
    ``release()`` puts the fp32 data back: before a checkpoint is written, and at the end. Left alone: weights that
    require grad, weights not in fp32 (a 16-bit LLM), and weights that a module other than a Linear also owns (a tied
    output head shares the input-embedding table, which is read outside autocast)."""

    def __init__(self, module: torch.nn.Module) -> None:
        import torch

        owned_elsewhere = {
            id(p) for m in module.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)
        }
        weights: dict[int, torch.nn.Parameter] = {}
        for m in module.modules():
            w = getattr(m, "weight", None) if isinstance(m, torch.nn.Linear) else None
            if w is None or w.requires_grad or w.dtype != torch.float32 or id(w) in owned_elsewhere:
                continue
            weights[id(w)] = w
        self.weights = list(weights.values())
        self._fp32: list[torch.Tensor] | None = None

    @property
    def held(self) -> bool:
        return self._fp32 is not None

    def hold(self) -> None:
        import torch

        if self._fp32 is not None:
            return
        self._fp32 = [w.data for w in self.weights]
        for w in self.weights:
            w.data = w.data.to(torch.bfloat16)

    def release(self) -> None:
        if self._fp32 is None:
            return
        for w, data in zip(self.weights, self._fp32):
            w.data = data
        self._fp32 = None


def for_llm_dtype(choice: PrecisionChoice, requested: str, llm_dtype: str) -> PrecisionChoice:
    """A stage's precision given its LLM's weight dtype. An LLM held in bfloat16 or float16 keeps its trainable
    weights in fp32 (``apply_trainable``), and 16-bit and fp32 tensors only meet inside autocast: ``auto`` takes bf16
    there whatever the timing, and an explicit ``fp32`` is an error naming both settings."""
    if llm_dtype == "float32" or choice.chosen == "bf16":
        return choice
    if requested != "auto":
        raise ConfigError(
            f"precision: {requested} with llm.dtype={llm_dtype}: a 16-bit LLM trains its LoRA and norms in fp32 "
            "under autocast; set precision: bf16 (or auto), or llm.dtype=float32"
        )
    reason = f"llm.dtype={llm_dtype}: a 16-bit LLM with fp32 trainable weights runs under autocast ({choice.reason})"
    return PrecisionChoice("bf16", choice.fp32_ms, choice.bf16_ms, reason)


def resolve_precision(requested: str, dist: DistInfo, resumed: str | None = None) -> PrecisionChoice:
    """What a stage runs in: ``fp32``/``bf16`` as configured; for ``auto``, the precision of the run being resumed
    (``resumed``) or else this device's measured choice, rank 0's under DDP so that every rank agrees."""
    if requested == "auto" and resumed is not None:
        if resumed not in ("fp32", "bf16"):
            raise ValueError(f"trainer state: precision {resumed!r} is not 'fp32' or 'bf16'")
        kept: Resolved = "bf16" if resumed == "bf16" else "fp32"
        return PrecisionChoice(kept, None, None, "kept from the run being resumed")
    choice = requested_precision(requested, dist.device)
    if requested == "auto" and dist.world > 1:
        import torch
        import torch.distributed

        flag = torch.tensor([1.0 if choice.chosen == "bf16" else 0.0], device=dist.device)
        torch.distributed.broadcast(flag, src=0)
        agreed: Resolved = "bf16" if flag.item() > 0.5 else "fp32"
        if agreed != choice.chosen:
            choice = PrecisionChoice(agreed, choice.fp32_ms, choice.bf16_ms, f"rank 0 chose it ({choice.reason} here)")
    return choice
