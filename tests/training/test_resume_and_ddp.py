import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pointalign.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def stage1a(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    for stage in ("stage0", "stage1a"):
        assert main(["train", str(CONFIGS / f"{stage}.yaml"), "--out", str(out), f"data.root={tiny_data}"]) == 0
    return out / "stage1a"


def _train_cmd(out, tiny_data, stage1a, resume=False):
    args = [
        sys.executable,
        "-m",
        "pointalign.cli",
        "train",
        str(CONFIGS / "stage1b.yaml"),
        "--out",
        str(out),
        f"data.root={tiny_data}",
        f"init_from={stage1a}",
        "optim.steps=120",
        "checkpoint_every=7",
    ]
    return args + (["--resume"] if resume else [])


def _steps_logged(out):
    path = out / "logs" / "stage1b" / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except json.JSONDecodeError:  # a line being written
        return 0


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tiny_data, stage1a, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(full, tiny_data, stage1a), env=ENV, check=True, capture_output=True)
    proc = subprocess.Popen(
        _train_cmd(killed, tiny_data, stage1a), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while _steps_logged(killed) < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "stage1b" / "trainer_state.json").read_text())
    assert 0 < state["step"] < 120 and not state["complete"]
    leftovers = [p.name for p in killed.iterdir() if p.name.startswith(".")]
    subprocess.run(_train_cmd(killed, tiny_data, stage1a, resume=True), env=ENV, check=True, capture_output=True)
    a = load_file(str(full / "stage1b" / "model.safetensors"))
    b = load_file(str(killed / "stage1b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logged = [json.loads(x)["step"] for x in (killed / "logs" / "stage1b" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 121))
    assert len(leftovers) <= 1  # at most the temporary folder of a checkpoint being written at the kill


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_over_gloo(tiny_data, stage1a, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).parent / "ddp_worker.py"),
        str(CONFIGS / "stage1b.yaml"),
        str(tmp_path / "out"),
        str(report),
        f"data.root={tiny_data}",
        f"init_from={stage1a}",
        "optim.steps=6",
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["hash"] == r1["hash"]  # identical weights on both ranks
    assert not set(r0["seen"]) & set(r1["seen"])  # disjoint data shards
    assert (tmp_path / "out" / "stage1b" / "model.safetensors").is_file()
