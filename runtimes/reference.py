"""A bundle's parity reference: its source model in fp32 with the bundle's weights and roundings (the fake-quant
model for quantized bundles). Parity compares a bundle against it, and the exporter writes the bundle's reference
fixture (runtimes.fixture) with it."""

from __future__ import annotations

from pathlib import Path

import torch

from runtimes.backends.reference import ReferenceBackend
from runtimes.checkpoint import config_sha256
from runtimes.errors import UserError
from runtimes.quant.kv import Int8KVCache, load_scales
from runtimes.quant.recipe import apply_fake_quant, load_module, reference_weights


def bundle_reference(manifest: dict, reference_model: str | None, bundle_dir: Path | None = None):
    """The parity reference of a bundle: its source model in fp32, with the bundle's quantized weights
    dequantized (fake-quant) and activations and scales rounded as its kernels do."""
    quant = manifest["quant"]
    source = reference_model or manifest["source_model"]["id"]
    module, weights, config = reference_weights(source, quant, manifest["max_seq_len"])
    if config_sha256(config) != manifest["source_model"]["config_sha256"]:
        raise UserError(f"{source} is not the model this bundle was exported from (config differs); "
                        "pass the right one with --reference")
    activations = quant.get("activations", "float")
    apply_fake_quant(module, weights, activations, quant.get("int4_scale_dtype", "float32"),
                     quant.get("int8_scale_dtype", "float32"))
    if (manifest.get("npu") or {}).get("activations") == "float16":  # the NPU graphs compute in fp16: so does this
        compute_in_fp16(module)
        name = "fp16" if not weights else f"fake-quant {quant['name']}"
        return ReferenceBackend(module), name + " (fp16 activations and KV cache, as the NPU graphs)"
    kv_dtype = manifest["kv_cache"]["dtype"]
    if kv_dtype == "int8":  # the cache's rounding, with the scales the graph stores it with
        scales = load_scales(bundle_dir, module.args)
        module.setup_caches(manifest["max_seq_len"], torch.float32,
                            make_cache=lambda i: Int8KVCache(manifest["max_seq_len"], scales[i]))
    elif kv_dtype != "float32" and quant["name"] != "fp16":  # the cache's storage rounding
        module.setup_caches(manifest["max_seq_len"], torch.float32, kv_dtype=getattr(torch, kv_dtype))
    name = "fp32" if not weights else f"fake-quant {quant['name']}"
    return ReferenceBackend(module), name + (f" ({activations} activations)" if activations != "float" else "") \
        + (", int8 KV cache" if kv_dtype == "int8" else "")


def compute_in_fp16(module) -> None:
    """Weights, activations, RoPE tables and KV cache in fp16, as the npu profile's graphs keep them. Each linear
    multiplies its fp16 values in fp32 and rounds the result to fp16 (an fp16 matmul that accumulates in fp32):
    torch's own fp16 matmul gives that too, but runs on a CPU about six times slower than fp32."""
    class Fp16Linear(torch.nn.Module):
        def __init__(self, weight: torch.Tensor):
            super().__init__()
            self.weight32 = weight.detach().half().float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x.float(), self.weight32).half()

    module.half()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child.bias is None:
                setattr(parent, name, Fp16Linear(child.weight))


def fp32_reference(manifest: dict, reference_model: str | None):
    """The bundle's source model in fp32, unquantized (what an NPU bundle's fp16 arithmetic and quantization cost
    together)."""
    module, _ = load_module(reference_model or manifest["source_model"]["id"], manifest["max_seq_len"])
    return ReferenceBackend(module)
