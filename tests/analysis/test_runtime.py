import json
import time

import torch

from pointalign.analysis.runtime import RunClock, append_record, host_info, markdown, minutes

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f amx_tile avx512_bf16 amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f amx_tile avx512_bf16 amx_bf16
"""


def test_host_info_reads_the_cpu_and_its_bf16_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = host_info(path)
    assert info["cpu"] == "Intel(R) Xeon(R) Processor"
    assert info["bf16_flags"] == ["avx512_bf16", "amx_bf16", "amx_tile"]  # BF16_FLAGS' order; avx512_fp16 absent
    assert info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()


def test_host_info_without_cpuinfo_falls_back_to_platform(tmp_path):
    info = host_info(tmp_path / "missing")
    assert info["cpu"] and info["bf16_flags"] == []


def test_run_clock_records_each_part_in_order_and_the_whole_call():
    clock = RunClock()
    with clock.part("stage0"):
        time.sleep(0.02)
    with clock.part("evaluation of stage2-seed0"):
        pass
    record = clock.record({"cpu": "x"}, "fp32 (forced)")
    assert [p["part"] for p in record["parts"]] == ["stage0", "evaluation of stage2-seed0"]
    assert record["parts"][0]["seconds"] >= 0.0 and record["seconds"] >= record["parts"][0]["seconds"]
    assert record["evaluation_precision"] == "fp32 (forced)" and record["host"] == {"cpu": "x"}


def test_minutes_by_hand():
    assert minutes(12.34) == "12.3 s"
    assert minutes(60) == "1 min 00 s"
    assert minutes(1435.6) == "23 min 56 s"


def test_append_record_keeps_every_call(tmp_path):
    path = append_record(tmp_path, {"seconds": 1.0})
    append_record(tmp_path, {"seconds": 2.0})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert path == tmp_path / "logs" / "reproduce.jsonl"
    assert [r["seconds"] for r in lines] == [1.0, 2.0] and all("finished" in r for r in lines)


def test_markdown_names_the_host_and_every_part():
    record = {
        "host": {"cpu": "AMD EPYC", "bf16_flags": [], "threads": 2, "torch": "2.13.0", "capability": "AVX512"},
        "evaluation_precision": "bf16 (faster)",
        "parts": [{"part": "stage0", "seconds": 360.4}, {"part": "data", "seconds": 0.2}],
        "seconds": 1436.0,
    }
    md = "\n".join(markdown(record))
    assert "AMD EPYC; 2 torch threads; torch 2.13.0, CPU capability AVX512" in md
    assert "bf16-related CPU flags: none of avx512_bf16" in md and "**23 min 56 s**" in md
    assert "| stage0 | 6 min 00 s |" in md and "| data | 0.2 s |" in md
