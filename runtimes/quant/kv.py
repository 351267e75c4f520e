"""An int8 KV cache with static per-channel scales, as the ONNX CPU graph stores one through ONNX Runtime's
GroupQueryAttention (`kv_cache_bit_width` 8; exporter/targets/onnx_cpu.py divides keys and values by these scales
and runs the kernel's PER_TENSOR mode at scale 1, which its CPU kernel reads faster than PER_CHANNEL).

Each new key and value (after QK-norm and RoPE) is stored as round(x / scale), rounding half to even and clamped to
[-128, 127]. Attention then reads the int8 cache times the scale, the new tokens included. The scales are one per
(layer, kv head, channel) and are fixed at export:

- keys: RoPE rotates channel i with channel i + head_dim/2 by an angle that depends on the position. The pair's
  norm sqrt(k_i² + k_(i+half)²) does not change, so it bounds both channels at every position. Its maximum over the
  calibration tokens (taken after the rotation, where the norm is the same) gives the scale of both channels, and a
  key seen in calibration never saturates at a later position.
- values: the maximum |v| per channel.

Both get HEADROOM for tokens unlike the calibration set's; beyond it the kernel saturates. `fake_quant` is the same
rounding for the parity reference (Int8KVCache, the reference's cache when the bundle's is int8); the
measurement itself is runtimes/quant/kv_calibration.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtimes.errors import UserError
from runtimes.model import KVCache

QMAX = 127
HEADROOM = 1.1  # above the calibration maximum: 0.14 bits of resolution for room
SCALES_FILE = "kv_scales.npy"  # [layers, 2 (key, value), kv_heads, head_dim] float32, in an int8-KV bundle


def codes(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The int8 codes the kernel stores for x, as float32: x / scale rounded half to even, clamped to int8. scale
    broadcasts against x."""
    return torch.round(x.float() / scale).clamp(-QMAX - 1, QMAX)


def fake_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded as the kernel stores it, back in x's dtype: codes(x, scale) × scale (for x [B, kv_heads, T,
    head_dim], scale [kv_heads, 1, head_dim])."""
    return (codes(x, scale) * scale).to(x.dtype)


class Int8KVCache(KVCache):
    """The reference's model of an int8 cache: each new entry rounded as the kernel stores it (fake_quant with the
    bundle's per-channel scales), kept dequantized in float32 buffers. scales: [2 (key, value), kv_heads,
    head_dim]."""

    def __init__(self, max_seq_len: int, scales: torch.Tensor):
        _, n_kv_heads, head_dim = scales.shape
        super().__init__(max_seq_len, n_kv_heads, head_dim, torch.float32)
        self.scales = scales[:, :, None, :].float()  # [2, kv_heads, 1, head_dim]: broadcasts over positions

    def store(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fake_quant(k, self.scales[0]), fake_quant(v, self.scales[1])


def save_scales(bundle_dir: Path, scales: torch.Tensor) -> None:
    """The scales into the bundle's SCALES_FILE (the graph holds them as constants; parity reads this file)."""
    np.save(bundle_dir / SCALES_FILE, scales.numpy().astype(np.float32))


def load_scales(bundle_dir: Path, args) -> torch.Tensor:
    """A bundle's scales → [layers, 2, kv_heads, head_dim] float32 for a model of ModelArgs `args`; a file that
    cannot be read or does not fit the model is a UserError."""
    path = bundle_dir / SCALES_FILE
    try:
        scales = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the KV cache's scales {path} ({exc}); export the bundle again") from None
    if tuple(scales.shape) != (args.num_hidden_layers, 2, args.num_key_value_heads, args.head_dim):
        raise UserError(f"{SCALES_FILE} holds scales of shape {tuple(scales.shape)}, not [layers, 2, kv_heads, "
                        "head_dim] of this model; export the bundle again")
    return scales
