"""Quantizing a checkpoint as a command: the recipe's calibration data (AWQ), the quantization itself
(runtimes.quant), and `python -m exporter quantize`, which writes a quantized checkpoint (QDIR) atomically."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from calibration.datasets import calibration_set
from exporter.options import QuantOptions
from exporter.output import atomic_output_dir, check_output
from exporter.targets.schemes import QuantScheme, scheme_named
from runtimes.checkpoint import CONFIG_DTYPES, config_sha256, load_config, resolve_model_dir, shard_files
from runtimes.errors import UserError
from runtimes.files import cache_root
from runtimes.model import from_pretrained
from runtimes.quant.recipe import (QuantRecipe, check_device, choose_group_size, is_quantized_checkpoint,
                                   load_quantized, quantize_module, save_quantized)
from runtimes.tokenizer import QwenTokenizer


def _recipe(module, model_dir: Path, quant: QuantOptions):
    """The recipe for quant.name (int8, int4 or awq-int4; quant.embedding resolved) → (recipe, calibration set or
    None): AWQ's calibration tokens, recorded in the recipe with where its searches run."""
    recipe = QuantRecipe.for_quant(quant.name, choose_group_size(module.args, quant.group_size), quant.symmetric,
                                   quant.embedding)
    if recipe.method != "awq":
        return recipe, None
    calib_set = calibration_set(quant.calib, QwenTokenizer(model_dir).encode, quant.samples, quant.seq_len)
    recipe.calibration = {"source": quant.calib, "samples": quant.samples, "seq_len": quant.seq_len,
                          "sha256": calib_set.sha256, "device": check_device(quant.device)}
    return recipe, calib_set


def quantize_with_recipe(module, model_dir: Path, quant: QuantOptions, progress: bool = True, release: bool = False):
    """Recipe for quant.name, calibration tokens when AWQ needs them, then quantize_module → (weights, recipe).
    quant.device: where AWQ's searches run (cpu or cuda); round-to-nearest needs no search."""
    recipe, calib_set = _recipe(module, model_dir, quant)
    return quantize_module(module, recipe, calib_set.tokens if calib_set else None, progress, release), recipe


def default_embedding(embedding: str, scheme: QuantScheme, int8_table: bool = False) -> str:
    """--embedding auto: the int4 table with int4 weights (smaller, and read by the LM head: the faster default on
    every CPU target), int8 otherwise and where a target needs the table in int8 (the onnx npu profile)."""
    if embedding != "auto":
        return embedding
    return "int4" if scheme.bits == 4 and not int8_table else "int8"


def awq_cached(module, model_dir: Path, config: dict, quant: QuantOptions, max_seq_len: int, progress: bool):
    """AWQ once per (checkpoint, recipe, calibration tokens, device): the result is kept as a quantized checkpoint
    in cache_root()/awq/KEY, which later exports reuse and parity reads (it never re-runs AWQ).
    → (module, QuantizedTensor per name, recipe, the QDIR)."""
    recipe, calib_set = _recipe(module, model_dir, quant)
    identity = [config_sha256(config), str(model_dir.resolve()),
                [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shard_files(model_dir)],
                {k: v for k, v in asdict(recipe).items() if k != "awq_alphas"}]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    qdir = cache_root() / "awq" / key
    if is_quantized_checkpoint(qdir):
        module, weights, recipe, _ = load_quantized(qdir, max_seq_len)
        if progress:
            print(f"AWQ: reusing the weights kept in {qdir}")
        return module, weights, recipe, qdir
    weights = quantize_module(module, recipe, calib_set.tokens, progress, release=True)
    recipe.source_model, recipe.source_config_sha256 = str(model_dir.resolve()), config_sha256(config)
    with atomic_output_dir(qdir, "quantized checkpoint", overwrite=True, inputs=[model_dir]) as tmp:
        save_quantized(tmp, module, config, weights, recipe, model_dir)
    if progress:
        print(f"AWQ: weights kept in {qdir} (parity reads them; later exports of this recipe reuse them)")
    return module, weights, recipe, qdir


def quantize_checkpoint(model: str, quant: QuantOptions, out: str, overwrite: bool = False,
                        progress: bool = True) -> dict:
    """`python -m exporter quantize`: load, (calibrate,) quantize, write QDIR atomically → summary."""
    start = time.perf_counter()
    quant = replace(quant, embedding=default_embedding(quant.embedding, scheme_named(quant.name)))
    model_dir = resolve_model_dir(model)
    if is_quantized_checkpoint(model_dir):
        raise UserError(f"{model_dir} is already quantized; quantize its full-precision source instead")
    check_output(out, "quantized checkpoint", overwrite, [model_dir])
    # keep the checkpoint's own dtype (bf16 for Qwen: half the memory of fp32); quantization math is fp32
    # per tensor, and AWQ upcasts one block at a time
    config = load_config(model_dir)
    dtype = CONFIG_DTYPES.get(config.get("torch_dtype") or config.get("dtype"), torch.float32)
    module, config = from_pretrained(model_dir, max_seq_len=8, dtype=dtype)
    with atomic_output_dir(out, "quantized checkpoint", overwrite=overwrite, inputs=[model_dir]) as tmp:
        weights, recipe = quantize_with_recipe(module, model_dir, quant, progress)
        recipe.source_model, recipe.source_config_sha256 = str(model), config_sha256(config)
        save_quantized(tmp, module, config, weights, recipe, model_dir)
    return {"out": str(out), "recipe": asdict(recipe), "seconds": time.perf_counter() - start,
            "quantized_weights": len(weights)}
