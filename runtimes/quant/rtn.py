"""Round-to-nearest weight quantization: int8 per output channel, int4 group-wise.

A weight [out, in] is split into groups of `group_size` input channels (per-channel = one group
of `in`). Symmetric: q = round(w / scale), scale = max|w| / qmax, q in [-2^(b-1), 2^(b-1) - 1].
Asymmetric: q = round(w / scale) + zero, q in [0, 2^b - 1], zero an integer. Dequantized:
(q - zero) * scale. `clip` shrinks the range (AWQ's clipping search picks it per group).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedTensor:
    q: torch.Tensor  # int8 [out, in]: signed codes (symmetric) or unsigned 0..2^b-1 (asymmetric)
    scales: torch.Tensor  # float32 [out, in // group_size]
    zeros: torch.Tensor | None  # int8 [out, in // group_size] (asymmetric) or None
    bits: int
    group_size: int

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out, inp = w.shape
    if inp % group_size:
        raise ValueError(f"input size {inp} is not a multiple of group size {group_size}")
    return w.reshape(out, inp // group_size, group_size)


def quantize(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
             clip: torch.Tensor | float = 1.0) -> QuantizedTensor:
    """w [out, in] → codes and per-group scales (and zeros). group_size None = per output channel."""
    w = w.detach().float()
    group_size = group_size or w.shape[1]
    g = _grouped(w, group_size)
    clip = torch.as_tensor(clip, dtype=torch.float32)
    if clip.dim() == 2:
        clip = clip.unsqueeze(-1)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (g.abs().amax(-1, keepdim=True) * clip).clamp(min=1e-8) / qmax
        q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax)
        zeros = None
    else:
        qmax = 2 ** bits - 1
        hi = (g.amax(-1, keepdim=True) * clip).clamp(min=0)
        lo = (g.amin(-1, keepdim=True) * clip).clamp(max=0)
        scale = ((hi - lo) / qmax).clamp(min=1e-8)
        zero = torch.clamp(torch.round(-lo / scale), 0, qmax)
        q = torch.clamp(torch.round(g / scale) + zero, 0, qmax)
        zeros = zero.squeeze(-1).to(torch.uint8 if bits <= 8 else torch.int16)
    return QuantizedTensor(q.reshape(w.shape).to(torch.int8 if symmetric else torch.uint8),
                           scale.squeeze(-1), zeros, bits, group_size)


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """Back to float32 [out, in]: (q - zero) * scale."""
    q = _grouped(qt.q.float(), qt.group_size)
    if qt.zeros is not None:
        q = q - qt.zeros.float().unsqueeze(-1)
    return (q * qt.scales.unsqueeze(-1)).reshape(qt.shape)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                  clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    return dequantize(quantize(w, bits, group_size, symmetric, clip))


def fake_quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """8-bit dynamic per-token asymmetric quantize→dequantize of activations [..., features]: what XNNPACK's
    dynamically quantized linears (qd8) do to their input. Range always includes 0; zero point an int8."""
    lo = x.amin(-1, keepdim=True).clamp(max=0).float()
    hi = x.amax(-1, keepdim=True).clamp(min=0).float()
    scale = ((hi - lo) / 255).clamp(min=torch.finfo(torch.float32).eps)
    zero = torch.clamp(-128 - torch.round(lo / scale), -128, 127)
    q = torch.clamp(torch.round(x.float() / scale) + zero, -128, 127)
    return ((q - zero) * scale).to(x.dtype)


def fake_quantize_activations_blockwise(x: torch.Tensor, block: int) -> torch.Tensor:
    """8-bit dynamic symmetric quantize→dequantize of activations per block of `block` features: what ONNX
    Runtime's MatMulNBits does at accuracy level 4 (block = the weight's group size; zero blocks stay zero)."""
    shape = x.shape
    xb = x.float().reshape(*shape[:-1], shape[-1] // block, block)
    scale = xb.abs().amax(-1, keepdim=True) / 127
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return (torch.clamp(torch.round(xb / scale), -127, 127) * scale).reshape(shape).to(x.dtype)
