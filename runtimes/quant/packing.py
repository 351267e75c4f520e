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
