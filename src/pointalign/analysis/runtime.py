"""Where a ``reproduce`` call ran and how long each of its parts took, for its report.

The 30-minute budget of the quickstart holds on some hosts and not on others (README, "Measured (cpu-small)"), so
every report says what it was measured on: the CPU, the torch build and kernel capability, the CPU flags that decide
whether bf16 pays, and the wall time of each part of the call. A part that an earlier call already finished is
found and reused in seconds; each call appends its record to ``<out>/logs/reproduce.jsonl``, so the call that
trained a stage keeps its time there when a later call (``--seeds 2``, say) rewrites the report.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# CPU flags that decide what bf16 costs on a CPU (torch's capability string does not tell them apart)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def host_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and its bf16-related flags (from ``cpuinfo`` where there is one, else ``platform``),
    torch's thread count, version and CPU capability."""
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {
        "cpu": cpu,
        "bf16_flags": [f for f in BF16_FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


class RunClock:
    """Wall time of the named parts of one call, in the order they ran, and of the whole call so far."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.parts: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.parts.append((name, time.perf_counter() - start))

    def record(self, host: dict[str, Any], evaluation_precision: str) -> dict[str, Any]:
        """The report's ``run`` entry: the host, what evaluation ran in, each part's seconds and the total so far."""
        return {
            "host": host,
            "evaluation_precision": evaluation_precision,
            "parts": [{"part": name, "seconds": round(seconds, 1)} for name, seconds in self.parts],
            "seconds": round(time.perf_counter() - self.start, 1),
        }


def append_record(out: Path, record: dict[str, Any]) -> Path:
    """Append ``record`` (with the date and time) to ``<out>/logs/reproduce.jsonl``; returns that path."""
    path = out / "logs" / "reproduce.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **record}) + "\n")
    return path


def minutes(seconds: float) -> str:
    """``1436.2`` -> ``"23 min 56 s"``; under a minute, ``"12.3 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60:02d} s"


def markdown(record: dict[str, Any]) -> list[str]:
    """The report's section on the host and the time per part."""
    host = record["host"]
    flags = ", ".join(host["bf16_flags"]) or "none of " + ", ".join(BF16_FLAGS)
    lines = [
        "## This call's host and time",
        "",
        f"{host['cpu']}; {host['threads']} torch threads; torch {host['torch']}, CPU capability "
        f"{host['capability']}; bf16-related CPU flags: {flags}. Evaluation and probes ran in "
        f"{record['evaluation_precision']}; each training stage logs its own choice. Wall time of this `reproduce` "
        f"call: **{minutes(record['seconds'])}**. A part that an earlier call had finished is reused in seconds; "
        "`logs/reproduce.jsonl` keeps every call's record.",
        "",
        "| part | wall time |",
        "|---|---:|",
    ]
    lines += [f"| {p['part']} | {minutes(p['seconds'])} |" for p in record["parts"]]
    return lines
