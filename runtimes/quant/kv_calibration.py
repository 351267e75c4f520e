"""The int8 KV cache's scales, measured at export (runtimes/quant/kv.py says what they are and how the kernel uses
them): the keys and values a model writes for calibration tokens, one layer at a time."""

from __future__ import annotations

from dataclasses import replace

import torch

from runtimes.quant.kv import HEADROOM, QMAX
from runtimes.quant.recipe import release_weight, set_weight
from runtimes.quant.rtn import dequantize


def _embed(module, weights: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The embedding of tokens. An export keeps a quantized table only as codes: the rows these tokens use are
    dequantized, not the whole vocabulary."""
    table = module.embed_tokens.weight
    if not table.is_meta:
        return torch.nn.functional.embedding(tokens, table)
    qt = weights["embed_tokens.weight"]
    rows, index = tokens.unique(return_inverse=True)
    used = replace(qt, q=qt.q[rows], scales=qt.scales[rows], zeros=None if qt.zeros is None else qt.zeros[rows])
    return torch.nn.functional.embedding(index, dequantize(used).to(table.dtype))


@torch.no_grad()
def calibrate(module, tokens: torch.Tensor, weights: dict | None = None, chunk: int = 4) -> torch.Tensor:
    """Per-channel scales from the keys and values `module` writes for `tokens` [N, T] → [layers, 2, kv_heads,
    head_dim] float32. It runs one layer at a time over all sequences (each attending causally within itself), so
    a module whose quantized weights were released (an export's, see quantize_module's release) works too: each
    layer gets its dequantized `weights` while it runs, and gives them back after."""
    args = module.args
    half = args.head_dim // 2
    bounds = torch.zeros(args.num_hidden_layers, 2, args.num_key_value_heads, args.head_dim)
    weights = weights or {}
    seq_len = min(tokens.shape[1], module.max_seq_len)
    tokens = tokens[:, :seq_len]
    positions = torch.arange(seq_len)
    cos, sin = module.rope(positions)
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))[None, None]
    states = [_embed(module, weights, tokens[i:i + chunk]) for i in range(0, len(tokens), chunk)]
    for index, layer in enumerate(module.layers):
        released = [f"layers.{index}.{name}" for name, param in layer.named_parameters() if param.is_meta]
        for name in released:  # this layer's dequantized weights, for as long as it runs
            set_weight(module, name, dequantize(weights[name]).to(module.get_parameter(name).dtype))
        attend = layer.self_attn.attend
        cache, attend.kv_cache = attend.kv_cache, None

        def observe(_, inputs, __, index=index):
            _, k, v = inputs[:3]  # [B, T, kv_heads, head_dim], after QK-norm and RoPE
            pair = torch.sqrt(k[..., :half].float() ** 2 + k[..., half:].float() ** 2).amax(dim=(0, 1))
            bounds[index, 0] = torch.maximum(bounds[index, 0], torch.cat((pair, pair), dim=-1))
            bounds[index, 1] = torch.maximum(bounds[index, 1], v.float().abs().amax(dim=(0, 1)))

        handle = attend.register_forward_hook(observe)
        try:
            states = [layer(x, cos, sin, causal, positions) for x in states]
        finally:
            handle.remove()
            attend.kv_cache = cache
            for name in released:
                release_weight(module, name)
    # a channel that stayed zero keeps a tiny scale (it stores zeros either way, and nothing divides by zero)
    return (bounds * HEADROOM / QMAX).clamp_min(1e-8)
