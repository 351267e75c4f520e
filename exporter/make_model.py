"""Random-weight Qwen3 checkpoints with the published shapes, for export, memory and speed work.

The weights are random (seeded), so nothing measured on them says anything about accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from exporter.output import RANDOM_MODEL_MARKER, atomic_output_dir
from exporter.tokenizer_files import QWEN3_ADDED_TOKENS, real_qwen3_tokenizer, write_tokenizer_files
from runtimes.checkpoint import CONFIG_DTYPES
from runtimes.files import as_os_error, file_table
from runtimes.model import ModelArgs, Qwen3, hf_name

# Qwen3's published config.json values for each size (Qwen/Qwen3-0.6B, -1.7B, -4B).
_COMMON = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
    "head_dim": 128, "num_key_value_heads": 8, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_theta": 1000000, "rope_scaling": None, "max_position_embeddings": 40960,
    "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False,
    "sliding_window": None, "max_window_layers": 28, "tie_word_embeddings": True,
    "bos_token_id": 151643, "eos_token_id": 151645, "initializer_range": 0.02,
    "use_cache": True, "torch_dtype": "bfloat16",
}
SHAPES = {
    "0.6b": {**_COMMON, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16},
    "1.7b": {**_COMMON, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
             "num_attention_heads": 16},
    "4b": {**_COMMON, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
           "num_attention_heads": 32, "max_window_layers": 36},
}


def random_weights(config: dict, seed: int = 0, dtype: torch.dtype = torch.bfloat16):
    """Yield (hf_name, tensor) per layer group: normal(0, 0.02) matrices, norms near 1."""
    args = ModelArgs.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in Qwen3(args).named_parameters()}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            # not exactly 1, so a norm whose weight is ignored shows up in parity
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            tensor = 0.02 * torch.randn(shape, generator=gen)
        else:
            tensor = config.get("initializer_range", 0.02) * torch.randn(shape, generator=gen)
        yield hf_name(name), tensor.to(dtype)


# Qwen3's published generation_config.json (thinking-mode sampling defaults)
QWEN3_GENERATION_CONFIG = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
                           "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95}


def write_random_checkpoint(out: str | Path, config: dict, seed: int = 0, dtype: str = "bfloat16",
                            shard_bytes: int = 2 << 30, overwrite: bool = False, with_tokenizer: bool = False) -> Path:
    """Write config.json + safetensors (sharded past `shard_bytes`) to `out`, atomically; with_tokenizer
    adds the real Qwen3 tokenizer and generation config (the vocab must be Qwen3's)."""
    config = {**config, "torch_dtype": dtype}
    with atomic_output_dir(out, "random model", overwrite=overwrite) as tmp:
        # flush each shard as soon as it is full, so memory stays near one shard (4b is 8 GB)
        written: list[tuple[Path, list[str]]] = []
        shard: dict[str, torch.Tensor] = {}
        size = total = 0

        def flush():
            path = tmp / f"shard-{len(written)}.partial"
            try:
                save_file(shard, path, metadata={"format": "pt"})
            except Exception as exc:  # safetensors' own error type: a full disk is an OSError inside it
                raise as_os_error(exc, path) from None
            written.append((path, list(shard)))

        for name, tensor in random_weights(config, seed, CONFIG_DTYPES[dtype]):
            nbytes = tensor.numel() * tensor.element_size()
            if shard and size + nbytes > shard_bytes:
                flush()
                shard, size = {}, 0
            shard[name] = tensor
            size += nbytes
            total += nbytes
        flush()
        if len(written) == 1:
            written[0][0].rename(tmp / "model.safetensors")
        else:
            weight_map = {}
            for i, (path, names) in enumerate(written, 1):
                fname = f"model-{i:05d}-of-{len(written):05d}.safetensors"
                path.rename(tmp / fname)
                weight_map.update({name: fname for name in names})
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        generation = {"bos_token_id": config.get("bos_token_id"), "eos_token_id": config.get("eos_token_id")}
        if with_tokenizer:
            write_tokenizer_files(real_qwen3_tokenizer(), tmp, config["max_position_embeddings"],
                                  special=dict(QWEN3_ADDED_TOKENS))
            generation = QWEN3_GENERATION_CONFIG
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        # a label for whoever finds it, and (every file with its size and sha256) the proof that the directory is
        # still exactly what this tool wrote, which --overwrite asks for before it replaces it
        (tmp / RANDOM_MODEL_MARKER).write_text(json.dumps({
            "written_by": "python -m exporter make-model", "weights": "random (normal 0, 0.02), no accuracy claims",
            "seed": seed, "dtype": dtype, "num_hidden_layers": config["num_hidden_layers"],
            "files": file_table(tmp, skip=(RANDOM_MODEL_MARKER,))}, indent=2) + "\n")
    return Path(out)
