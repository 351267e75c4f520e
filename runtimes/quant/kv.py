"""An int8 KV cache with static per-channel scales, as ONNX Runtime's GroupQueryAttention stores one on CPU
(`k_quant_type` / `v_quant_type` PER_CHANNEL, `kv_cache_bit_width` 8).

The kernel stores each new key and value (after QK-norm and RoPE) as round(x / scale), rounding half away from zero
and clamped to [-128, 127]. Attention then reads the int8 cache times the scale, the new tokens included. The
scales are one per (layer, kv head, channel) and are fixed at export:

- keys: RoPE rotates channel i with channel i + head_dim/2 by an angle that depends on the position. The pair's
  norm sqrt(k_i² + k_(i+half)²) does not change, so it bounds both channels at every position. Its maximum over the
  calibration tokens (taken after the rotation, where the norm is the same) gives the scale of both channels, and a
  key seen in calibration never saturates at a later position.
- values: the maximum |v| per channel.

Both get HEADROOM for tokens unlike the calibration set's; beyond it the kernel saturates. `fake_quant` is the same
rounding for the parity reference (runtimes/model.py's KVCache applies it when the bundle's cache is int8).
"""

from __future__ import annotations

import torch

QMAX = 127
HEADROOM = 1.1  # above the calibration maximum: 0.14 bits of resolution for room
SCALES_FILE = "kv_scales.npy"  # [layers, 2 (key, value), kv_heads, head_dim] float32, in an int8-KV bundle


def fake_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded as the kernel stores it, back in x's dtype: round half away from zero, clamp to int8, × scale.
    scale broadcasts against x (for x [B, kv_heads, T, head_dim]: [kv_heads, 1, head_dim])."""
    y = x.float() / scale
    q = torch.sign(y) * torch.floor(y.abs() + 0.5)
    return (q.clamp(-QMAX - 1, QMAX) * scale).to(x.dtype)


def _float_weight(module, weights: dict, name: str) -> torch.Tensor:
    """A weight's float values: the module's, or (an export drops a quantized weight's floats) its dequantized
    codes, the values the bundle computes with."""
    param = module.get_parameter(name)
    if not param.is_meta:
        return param
    from runtimes.quant.rtn import dequantize

    return dequantize(weights[name]).to(param.dtype)


@torch.no_grad()
def calibrate(module, tokens: torch.Tensor, weights: dict | None = None, chunk: int = 4) -> torch.Tensor:
    """Per-channel scales from the keys and values `module` writes for `tokens` [N, T] → [layers, 2, kv_heads,
    head_dim] float32. It runs one layer at a time over all sequences (each attending causally within itself), so
    a module whose quantized weights were dropped (an export's, see quantize_module's release) works too: each
    layer gets its dequantized `weights` while it runs."""
    args = module.args
    half = args.head_dim // 2
    bounds = torch.zeros(args.num_hidden_layers, 2, args.num_key_value_heads, args.head_dim)
    weights = weights or {}
    seq_len = min(tokens.shape[1], module.max_seq_len)
    tokens = tokens[:, :seq_len]
    positions = torch.arange(seq_len)
    cos, sin = module.rope(positions)
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))[None, None]
    table = _float_weight(module, weights, "embed_tokens.weight") if module.embed_tokens.weight.is_meta \
        else module.embed_tokens.weight
    states = [torch.nn.functional.embedding(tokens[i:i + chunk], table) for i in range(0, len(tokens), chunk)]
    del table
    for index, layer in enumerate(module.layers):
        prefix = f"layers.{index}."
        dropped = {name: param for name, param in layer.named_parameters() if param.is_meta}
        for name in dropped:  # this layer's dequantized weights, for as long as it runs
            owner, _, attr = name.rpartition(".")
            setattr(layer.get_submodule(owner), attr, torch.nn.Parameter(
                _float_weight(module, weights, prefix + name), requires_grad=False))
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
            for name, param in dropped.items():
                owner, _, attr = name.rpartition(".")
                setattr(layer.get_submodule(owner), attr, param)
    # a channel that stayed zero keeps a tiny scale (it stores zeros either way, and nothing divides by zero)
    return (bounds * HEADROOM / QMAX).clamp_min(1e-8)
