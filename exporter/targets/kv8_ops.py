"""The int8 KV cache's operators for ExecuTorch programs, as torch sees them at export: qwen_edge::kv8_update (new
keys or values rounded into an int8 cache in place) and qwen_edge::kv8_sdpa (causal grouped-query attention over the
cache's filled positions). Their kernels are runtimes/kernels/kv8_attention.cpp (the semantics are written there);
this module gives torch their schemas, the `.out` forms ExecuTorch's programs call, and a CPU implementation in torch
ops that computes what the kernels compute (export traces it; tests compare the kernels with it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtimes.quant import kv

LIBRARY = torch.library.Library("qwen_edge", "DEF")  # noqa: TOR901 (operators defined in Python, once per process)
LIBRARY.define("kv8_update(Tensor value, Tensor(a!) cache, Tensor scales, SymInt start_pos) -> Tensor")
LIBRARY.define("kv8_update.out(Tensor value, Tensor(a!) cache, Tensor scales, SymInt start_pos, *, Tensor(b!) out) "
               "-> Tensor(b!)")
LIBRARY.define("kv8_sdpa(Tensor query, Tensor key_cache, Tensor value_cache, Tensor key_scales, Tensor value_scales, "
               "SymInt start_pos) -> Tensor")
LIBRARY.define("kv8_sdpa.out(Tensor query, Tensor key_cache, Tensor value_cache, Tensor key_scales, "
               "Tensor value_scales, SymInt start_pos, *, Tensor(a!) out) -> Tensor(a!)")


def codes(value: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """value [1, T, kv_heads, D] → int8 codes [1, kv_heads, T, D], rounded as runtimes/quant/kv.py rounds them."""
    return kv.codes(value, scales[None, None]).to(torch.int8).transpose(1, 2)


def _update(value, cache, scales, start_pos):
    cache[:, :, start_pos:start_pos + value.shape[1]] = codes(value, scales)
    return value.new_empty((1,))


def _sdpa(query, key_cache, value_cache, key_scales, value_scales, start_pos):
    steps, heads = query.shape[1], query.shape[2]
    end = start_pos + steps
    keys = key_cache[:, :, :end].float() * key_scales[None, :, None]
    values = value_cache[:, :, :end].float() * value_scales[None, :, None]
    group = heads // key_cache.shape[1]
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    mask = torch.arange(end)[None, :] <= (start_pos + torch.arange(steps))[:, None]
    out = F.scaled_dot_product_attention(query.float().transpose(1, 2), keys, values, attn_mask=mask)
    return out.transpose(1, 2).to(query.dtype).contiguous()


@torch.library.impl(LIBRARY, "kv8_update", "CompositeExplicitAutograd")
def kv8_update(value, cache, scales, start_pos):
    return _update(value, cache, scales, start_pos)


@torch.library.impl(LIBRARY, "kv8_update.out", "CompositeExplicitAutograd")
def kv8_update_out(value, cache, scales, start_pos, *, out):
    _update(value, cache, scales, start_pos)
    return out


@torch.library.impl(LIBRARY, "kv8_sdpa", "CompositeExplicitAutograd")
def kv8_sdpa(query, key_cache, value_cache, key_scales, value_scales, start_pos):
    return _sdpa(query, key_cache, value_cache, key_scales, value_scales, start_pos)


@torch.library.impl(LIBRARY, "kv8_sdpa.out", "CompositeExplicitAutograd")
def kv8_sdpa_out(query, key_cache, value_cache, key_scales, value_scales, start_pos, *, out):
    out.copy_(_sdpa(query, key_cache, value_cache, key_scales, value_scales, start_pos))
    return out


@torch.library.register_fake("qwen_edge::kv8_update")
def _kv8_update_fake(value, cache, scales, start_pos):
    torch._check_is_size(start_pos)
    torch._check(start_pos + value.shape[1] <= cache.shape[2])
    return value.new_empty((1,))


@torch.library.register_fake("qwen_edge::kv8_sdpa")
def _kv8_sdpa_fake(query, key_cache, value_cache, key_scales, value_scales, start_pos):
    torch._check_is_size(start_pos)
    torch._check(start_pos + query.shape[1] <= key_cache.shape[2])
    return torch.empty_like(query)
