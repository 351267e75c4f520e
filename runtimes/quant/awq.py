"""AWQ int4 (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression"), our own code.

Per decoder block, on calibration activations:
1. Scale search. For each group of linears that share an input produced by a foldable op, find
   s = mean|x|^alpha (normalised) on a grid of alpha that minimises the group's output error
   ||x W^T - x (Q(W diag(s)) diag(s)^-1)^T||^2, then fold: W <- W diag(s), and the producer's
   output is divided by s. Groups in a Qwen3 block:
     input_layernorm          -> q_proj, k_proj, v_proj
     post_attention_layernorm -> gate_proj, up_proj
     up_proj (output rows)    -> down_proj
     v_proj (output rows)     -> o_proj   only without GQA (v's output must be o's whole input)
   In full precision the folded model computes exactly what the original did.
2. Clipping search. Per linear (not q/k, whose errors attention amplifies), per group of input
   channels, the clip ratio of the quantisation range that minimises that group's output error.
Blocks are processed one at a time; the next block's input is this block's full-precision output,
so memory stays near one block's activations. With device="cuda" each block, its activations and both
searches live on the GPU while it is processed; the model stays in host memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from runtimes.model import rope_tables
from runtimes.quant.rtn import QuantizedTensor, fake_quantize, quantize


@dataclass
class AWQConfig:
    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    scale_grid: int = 20
    clip_ratios: tuple[float, ...] = tuple(1.0 - 0.05 * i for i in range(11))  # 1.0 .. 0.5
    max_tokens: int = 4096  # calibration tokens used in the scale search
    clip_tokens: int = 512  # and in the clipping search


@dataclass
class AWQReport:
    alphas: dict[str, float] = field(default_factory=dict)  # chosen alpha per scaled group


def _rows(x: torch.Tensor, limit: int) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] <= limit:
        return x
    step = x.shape[0] / limit
    return x[(torch.arange(limit, device=x.device) * step).long()]  # evenly spaced tokens: deterministic


def search_scale(x: torch.Tensor, weights: list[torch.Tensor], cfg: AWQConfig) -> tuple[torch.Tensor, float]:
    """x [n, in], weights [[out_i, in]] sharing that input → (s [in], alpha)."""
    w = torch.cat(weights, 0)
    x_mean = x.abs().mean(0)
    reference = x @ w.T
    best = (float("inf"), torch.ones_like(x_mean), 0.0)
    for i in range(cfg.scale_grid):
        alpha = i / cfg.scale_grid
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        wq = fake_quantize(w * s, cfg.bits, cfg.group_size, cfg.symmetric) / s
        err = (x @ wq.T - reference).pow(2).mean().item()
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def search_clip(w: torch.Tensor, x: torch.Tensor, cfg: AWQConfig, chunk: int = 1024) -> torch.Tensor:
    """Per (output row, input group) clip ratio minimising that group's output error → [out, in/g]."""
    out, inp = w.shape
    g = cfg.group_size
    xg = x.reshape(x.shape[0], inp // g, g)  # [n, G, g]
    best_ratio = torch.ones(out, inp // g, device=w.device)
    for start in range(0, out, chunk):
        rows = w[start:start + chunk]
        wg = rows.reshape(rows.shape[0], inp // g, g)
        reference = torch.einsum("ngk,ogk->ogn", xg, wg)
        best_err = torch.full((rows.shape[0], inp // g), float("inf"), device=w.device)
        for ratio in cfg.clip_ratios:
            wq = fake_quantize(rows, cfg.bits, g, cfg.symmetric, clip=ratio).reshape_as(wg)
            err = (torch.einsum("ngk,ogk->ogn", xg, wq) - reference).pow(2).mean(-1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_ratio[start:start + chunk] = torch.where(better, ratio, best_ratio[start:start + chunk])
    return best_ratio


def _to_cpu(qt: QuantizedTensor) -> QuantizedTensor:
    return QuantizedTensor(qt.q.cpu(), qt.scales.cpu(), None if qt.zeros is None else qt.zeros.cpu(), qt.bits,
                           qt.group_size)


def _run_block(block, x: torch.Tensor, forward, limit: int, chunk: int = 8):
    """Run `forward` over `x` in chunks of samples → (output, input rows of every linear in `block`).

    Each chunk keeps an even share of `limit` token rows per linear, so memory holds one chunk's
    activations, never the whole calibration batch's.
    """
    per_chunk = -(-limit // -(-x.shape[0] // chunk))
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = [module.register_forward_hook(
        lambda m, args, out, name=name: captured.setdefault(name, []).append(_rows(args[0].detach(), per_chunk)))
        for name, module in block.named_modules() if isinstance(module, torch.nn.Linear)]
    try:
        output = torch.cat([forward(part) for part in x.split(chunk)])
    finally:
        for h in hooks:
            h.remove()
    return output, {name: torch.cat(rows) for name, rows in captured.items()}


@torch.no_grad()
def awq_quantize(model, tokens: torch.Tensor, cfg: AWQConfig, progress: bool = True, device: str = "cpu"):
    """Fold AWQ scales into `model` (in place, fp32) and quantize its block linears, searching on `device`.

    → (QuantizedTensor per linear name, on the CPU; AWQReport). `tokens` [samples, seq_len].
    """
    args = model.args
    seq_len = tokens.shape[1]
    cos, sin = rope_tables(args.head_dim, seq_len, args.rope_theta, args.rope_scaling)
    cos, sin = cos[None, :, None].to(device), sin[None, :, None].to(device)
    mask = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device))[None, None]
    input_pos = torch.arange(seq_len, device=device)
    x = model.embed_tokens(tokens).float().to(device)
    quantized, report = {}, AWQReport()
    for index, block in enumerate(tqdm(model.layers, desc="AWQ", unit="block", disable=not progress)):
        attn, mlp = block.self_attn, block.mlp
        cache, attn.attend.kv_cache = attn.attend.kv_cache, None
        stored_dtype = attn.q_proj.weight.dtype
        block.to(device=device, dtype=torch.float32)  # search and fold in fp32, one block at a time
        forward = lambda part: block(part, cos, sin, mask, input_pos)  # noqa: E731
        _, inputs = _run_block(block, x, forward, cfg.max_tokens)
        groups = [
            ("attn_in", block.input_layernorm, None, [attn.q_proj, attn.k_proj, attn.v_proj], inputs["self_attn.q_proj"]),
            ("mlp_in", block.post_attention_layernorm, None, [mlp.gate_proj, mlp.up_proj], inputs["mlp.gate_proj"]),
            ("down", None, mlp.up_proj, [mlp.down_proj], inputs["mlp.down_proj"]),
        ]
        if args.num_key_value_heads == args.num_attention_heads:
            groups.append(("o", None, attn.v_proj, [attn.o_proj], inputs["self_attn.o_proj"]))
        for name, norm, producer, linears, x_in in groups:
            s, alpha = search_scale(x_in, [l.weight for l in linears], cfg)
            report.alphas[f"layers.{index}.{name}"] = alpha
            if norm is not None:
                norm.weight.div_(s)
            else:
                producer.weight.div_(s.unsqueeze(1))  # output rows of the producer
            for linear in linears:
                linear.weight.mul_(s)
        # clipping on the scaled model's own inputs
        x, inputs = _run_block(block, x, forward, cfg.clip_tokens)
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                clip = 1.0 if name in ("self_attn.q_proj", "self_attn.k_proj") else \
                    search_clip(module.weight.float(), inputs[name], cfg)
                quantized[f"layers.{index}.{name}.weight"] = _to_cpu(quantize(module.weight, cfg.bits, cfg.group_size,
                                                                              cfg.symmetric, clip))
                module.to(stored_dtype)  # its quantized copy is what counts now; the norms stay fp32
        block.to("cpu")
        attn.attend.kv_cache = cache
    return quantized, report
