"""Packing int4 codes two to a byte (low nibble first), as MatMulNBits and our checkpoints store them."""

from __future__ import annotations

import torch


def pack_int4(codes: torch.Tensor, signed: bool) -> torch.Tensor:
    """[out, in] int4 codes ([-8, 7] if signed, else [0, 15]) → uint8 [out, in / 2]."""
    u = (codes.to(torch.int16) + (8 if signed else 0)).to(torch.uint8)
    if u.shape[-1] % 2:
        raise ValueError("int4 packing needs an even number of columns")
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    u = torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2).to(torch.int16)
    return (u - (8 if signed else 0)).to(torch.int8 if signed else torch.uint8)


def int8_block(in_features: int, limit: int = 128) -> int:
    """The block an int8 per-channel row is cut into for ONNX Runtime's block-quantized ops (MatMulNBits,
    GatherBlockQuantized): the largest power of two from 16 to `limit` dividing the row. 128 keeps the 8-bit
    MatMulNBits' int8 activation rounding (per block, at accuracy level 4) what the reference models: ORT rounds per
    min(block, 256), and at 256 its kernel's rounding differed from ours by 1.6e-3."""
    block = limit
    while block >= 16:
        if in_features % block == 0:
            return block
        block //= 2
    raise ValueError(f"an int8 row of {in_features} values cannot be cut into blocks of 16-{limit}")


def pack_nibbles(values: torch.Tensor) -> bytes:
    """ONNX's (U)INT4 tensor bytes: values in 0..15 (two's complement nibbles for INT4), low nibble first."""
    flat = values.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] | (flat[1::2] << 4)).numpy().tobytes()
