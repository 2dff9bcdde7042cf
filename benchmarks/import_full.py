"""`pointalign import minigpt3d` on files of the released models' full sizes: time and peak memory.

    python benchmarks/import_full.py [--workdir DIR] [--keep]

Writes, into a temporary folder (about 6 GB on disk; removed afterwards unless --keep), random tensors of the real
shapes that KEYS.md of the reference fixture lists, in the released formats:
    - Phi_2/: transformers 4.36's fused layout, fp16 (2.78 B parameters), with Phi-2's config and the fixture's tiny
      tokenizer (the import reads no text; a real folder has Phi-2's 50,295-entry tokenizer);
    - point_model.pth: ULIP-2's Point-BERT, 12 blocks x 384 ({"base_model": ...});
    - blip2_pretrained_flant5xxl.pth: BLIP-2's Q-Former (BERT-base, cross-attention every 2nd layer from 1408 wide);
    - MiniGPT_3D_stage_3.pth: the runner checkpoint of MiniGPT-3D's stage 3 (MLP, Q-Former LoRA r8 + norm weights,
      queries, both projectors, the LLM's LoRA r64 on query_key_value and dense + norm weights, and the runner's
      second, fp16 copy of the Point-BERT).
Then it runs the import in a child process (the paper preset: Phi-2 in bf16), as a user would, and prints the wall
time, the child's peak anonymous memory (sampled) against one bf16 copy of Phi-2 (the import must never hold two),
and its peak RSS, which also counts the pages of the memory-mapped safetensors file it has read. Nothing it writes
is committed; the numbers go to the README ("Using the released models").
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minigpt3d_tiny"
PHI2 = {  # Phi-2's config.json as transformers 4.36 writes it
    "architectures": ["PhiForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 50256,
    "embd_pdrop": 0.0,
    "eos_token_id": 50256,
    "hidden_act": "gelu_new",
    "hidden_size": 2560,
    "initializer_range": 0.02,
    "intermediate_size": 10240,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "phi",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "partial_rotary_factor": 0.4,
    "qk_layernorm": False,
    "resid_pdrop": 0.1,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.36.2",
    "use_cache": True,
    "vocab_size": 51200,
}
TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json")
H, LAYERS, VOCAB, FFN, HEAD_DIM = 2560, 32, 51200, 10240, 80  # Phi-2
QH, QLAYERS, QFFN, VISION, QUERIES = 768, 12, 3072, 1408, 32  # BLIP-2's Q-Former
LLM_R, QFORMER_R = 64, 8  # LoRA ranks of the released MiniGPT-3D files


def rand(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.randn(*shape) * 0.02).to(dtype)


def phi2_folder(folder: Path) -> int:
    """The fp16 Phi-2 folder; returns its parameter count."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(PHI2, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 50256, "eos_token_id": 50256}))
    for name in TOKENIZER_FILES:
        shutil.copy(FIXTURE / "Phi_2" / name, folder / name)
    half = torch.float16
    state = {"model.embed_tokens.weight": rand(VOCAB, H, dtype=half)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        state |= {
            p + "input_layernorm.weight": torch.ones(H, dtype=half),
            p + "input_layernorm.bias": torch.zeros(H, dtype=half),
            p + "self_attn.query_key_value.weight": rand(3 * H, H, dtype=half),
            p + "self_attn.query_key_value.bias": rand(3 * H, dtype=half),
            p + "self_attn.dense.weight": rand(H, H, dtype=half),
            p + "self_attn.dense.bias": rand(H, dtype=half),
            p + "mlp.fc1.weight": rand(FFN, H, dtype=half),
            p + "mlp.fc1.bias": rand(FFN, dtype=half),
            p + "mlp.fc2.weight": rand(H, FFN, dtype=half),
            p + "mlp.fc2.bias": rand(H, dtype=half),
        }
    state |= {
        "model.final_layernorm.weight": torch.ones(H, dtype=half),
        "model.final_layernorm.bias": torch.zeros(H, dtype=half),
        "lm_head.weight": rand(VOCAB, H, dtype=half),
        "lm_head.bias": rand(VOCAB, dtype=half),
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() for t in state.values())


def point_bert() -> dict[str, torch.Tensor]:
    """ULIP-2's Point-BERT at its real size (our encoder's names are the release's)."""
    from pointalign.config import preset
    from pointalign.models.point_encoder import PointEncoder

    with torch.no_grad():
        return {k: v.clone() for k, v in PointEncoder(preset("paper").encoder).state_dict().items()}


def linear(name: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    """A Linear's weight (out, in) and bias (out,) under ``name``."""
    return {f"{name}.weight": rand(out, inp), f"{name}.bias": rand(out)}


def layer_norm(name: str, width: int) -> dict[str, torch.Tensor]:
    """A LayerNorm's weight (ones) and bias (zeros) under ``name``."""
    return {f"{name}.weight": torch.ones(width), f"{name}.bias": torch.zeros(width)}


def blip2_qformer() -> dict[str, torch.Tensor]:
    """BLIP-2's Q-Former keys (KEYS.md section 2) at their real sizes."""
    q = "Qformer.bert."
    state = {
        q + "embeddings.position_ids": torch.arange(512).unsqueeze(0),
        **layer_norm(q + "embeddings.LayerNorm", QH),
        "query_tokens": rand(1, QUERIES, QH),
    }
    for i in range(QLAYERS):
        p = f"{q}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            state |= linear(p + f"attention.self.{name}", QH, QH)
        state |= {
            **linear(p + "attention.output.dense", QH, QH),
            **layer_norm(p + "attention.output.LayerNorm", QH),
            **linear(p + "intermediate_query.dense", QFFN, QH),
            **linear(p + "output_query.dense", QH, QFFN),
            **layer_norm(p + "output_query.LayerNorm", QH),
        }
        if i % 2 == 0:  # cross-attention every 2nd layer, from the 1408-wide vision side
            c = p + "crossattention."
            state |= {
                **linear(c + "self.query", QH, QH),
                **linear(c + "self.key", QH, VISION),
                **linear(c + "self.value", QH, VISION),
                **linear(c + "output.dense", QH, QH),
                **layer_norm(c + "output.LayerNorm", QH),
            }
    return state


def stage3(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MiniGPT-3D stage 3's trainables (KEYS.md section 5a) plus the runner's fp16 copy of the Point-BERT."""
    state = {
        "query_tokens": rand(1, QUERIES, QH),
        "point_2_Qformer_proj.0.weight": rand(QH, 384),
        "point_2_Qformer_proj.0.bias": rand(QH),
        "point_2_Qformer_proj.2.weight": rand(VISION, QH),
        "point_2_Qformer_proj.2.bias": rand(VISION),
        "llama_proj.weight": rand(4096, QH),
        "llama_proj.bias": rand(4096),
        "llama_proj2.weight": rand(H, 4096),
        "llama_proj2.bias": rand(H),
    }
    for i in range(QLAYERS):
        p = f"Qformer.bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            s = p + f"attention.self.{name}."
            state |= {
                s + "lora_A.default.weight": rand(QFORMER_R, QH),
                s + "lora_B.default.weight": rand(QH, QFORMER_R),
            }
        state |= {
            p + "attention.output.LayerNorm.weight": torch.ones(QH),
            p + "output_query.LayerNorm.weight": torch.ones(QH),
        }
        if i % 2 == 0:
            c = p + "crossattention."
            for name, width in (("query", QH), ("key", VISION), ("value", VISION)):
                s = c + f"self.{name}."
                state |= {
                    s + "lora_A.default.weight": rand(QFORMER_R, width),
                    s + "lora_B.default.weight": rand(QH, QFORMER_R),
                }
            state[c + "output.LayerNorm.weight"] = torch.ones(QH)
    llm = "llama_model.base_model.model.model."
    for i in range(LAYERS):
        p = f"{llm}layers.{i}."
        state |= {
            p + "self_attn.query_key_value.lora_A.default.weight": rand(LLM_R, H),
            p + "self_attn.query_key_value.lora_B.default.weight": rand(3 * H, LLM_R),
            p + "self_attn.dense.lora_A.default.weight": rand(LLM_R, H),
            p + "self_attn.dense.lora_B.default.weight": rand(H, LLM_R),
            p + "self_attn.q_layernorm.weight": torch.ones(HEAD_DIM),
            p + "self_attn.k_layernorm.weight": torch.ones(HEAD_DIM),
            p + "input_layernorm.weight": torch.ones(H),
            p + "post_layernorm.weight": torch.ones(H),
        }
    state[llm + "final_layernorm.weight"] = torch.ones(H)
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    for key, value in encoder.items():  # the runner saves the frozen encoder twice; the second copy's Linears fp16
        state["pc_encoder." + key] = value
        state["point_encoder." + key] = value.half() if value.dim() > 1 else value
    return state


def _status(pid: int) -> dict[str, int]:
    """RssAnon / RssFile / VmHWM of a process, in bytes (empty once it has exited)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in lines if line.startswith(("RssAnon", "RssFile", "VmHWM")))
    return {k: int(v.split()[0]) * 1024 for k, v in fields}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None, help="where to write the files (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and the imported folder")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pointalign-import-full-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        torch.manual_seed(0)
        n_phi = phi2_folder(work / "Phi_2")
        encoder = point_bert()
        torch.save({"base_model": encoder}, work / "point_model.pth")
        torch.save({"model": blip2_qformer()}, work / "blip2_pretrained_flant5xxl.pth")
        runner = {"model": stage3(encoder), "optimizer": {}, "config": {"model": {"lora_r": LLM_R, "lora_alpha": 16}}}
        torch.save({**runner, "scaler": {}, "epoch": 2}, work / "MiniGPT_3D_stage_3.pth")
        sizes = {
            p.name: p.stat().st_size for p in work.rglob("*") if p.is_file() and p.suffix in (".pth", ".safetensors")
        }
        print(
            f"files written in {time.perf_counter() - t:.0f} s: "
            + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items())
        )
        cmd = [sys.executable, "-m", "pointalign.cli", "import", "minigpt3d", "--llm", str(work / "Phi_2")]
        cmd += [
            "--point-encoder",
            str(work / "point_model.pth"),
            "--qformer",
            str(work / "blip2_pretrained_flant5xxl.pth"),
        ]
        cmd += ["--checkpoint", str(work / "MiniGPT_3D_stage_3.pth"), "--out", str(work / "imported")]
        t = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        anon = mapped = 0  # the child's peak anonymous memory, and the file pages it had mapped then
        while child.poll() is None:
            status = _status(child.pid)
            if status.get("RssAnon", 0) > anon:
                anon, mapped = status["RssAnon"], status.get("RssFile", 0)
            time.sleep(0.05)
        out, err = child.communicate()
        wall = time.perf_counter() - t
        if child.returncode != 0:
            raise SystemExit(f"import failed ({child.returncode}):\n{err[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # bytes (Linux reports KiB)
        folder = sum(p.stat().st_size for p in (work / "imported").rglob("*") if p.is_file())
        bf16 = 2 * n_phi
        print(out.strip())
        print(
            f"import: {wall:.0f} s wall; peak anonymous memory {anon / 1e9:.2f} GB = {anon / bf16:.2f}x one bf16 copy "
            f"of Phi-2 ({bf16 / 1e9:.2f} GB, {n_phi / 1e9:.2f} B parameters; sampled every 50 ms); peak RSS "
            f"{peak / 1e9:.2f} GB, which also counts the pages of the memory-mapped Phi-2 file read so far "
            f"({mapped / 1e9:.2f} GB of them at the anonymous peak: page cache the kernel can drop, not a copy); "
            f"the folder written: {folder / 1e6:.0f} MB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
