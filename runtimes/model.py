"""The Qwen3 module: the one definition of the model, for the reference runtime and every target.

A static KV cache of `max_seq_len` positions is updated in place at `input_pos`, so one forward serves prefill
(a chunk of tokens) and decode (one token); RoPE tables are precomputed. Numerics follow Hugging Face's Qwen3
(rotate-half RoPE, RMSNorm in fp32, per-head q/k RMSNorm before RoPE), so fp32 logits match `transformers`.

Targets change the model by swapping modules, never by rewriting its forward pass (as ExecuTorch's LLM exporter
swaps its KV cache and SDPA): each attention's `attend` (the KV cache and the attention over it: ExecuTorch's
cache ops, Core ML states), the linears (quantized kernels) and the embedding. `share_weights` gives a target
its own module objects over the same tensors, so several targets can be built from one loaded model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runtimes.memory import check_memory, model_need
from runtimes.rope import Yarn, yarn_from_config


@dataclass
class ModelArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    max_position_embeddings: int = 40960
    rope_scaling: Yarn | None = None  # None: default RoPE

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        """Build from a (validated) HF `config.json` dict; see runtimes.checkpoint.validate_config."""
        values = {f.name: config[f.name] for f in fields(cls) if f.name in config and f.name != "rope_scaling"}
        values.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
        rope = config.get("rope_parameters") or {}
        if "rope_theta" not in config and "rope_theta" in rope:
            values["rope_theta"] = rope["rope_theta"]
        return cls(**values, rope_scaling=yarn_from_config(config))

    @property
    def context_limit(self) -> int:
        """The most positions the model supports: max_position_embeddings, or YaRN's factor x its original context
        where that is more (Qwen3's config keeps 40960 while YaRN factor 4 over 32768 reaches 131072)."""
        scaled = self.rope_scaling.context if self.rope_scaling else 0
        return max(self.max_position_embeddings, scaled)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class KVCache(nn.Module):
    """Fixed buffers [1, kv_heads, max_seq_len, head_dim]; `update` writes in place. A subclass changes what an entry
    becomes on its way in (`store`): runtimes/quant/kv.Int8KVCache rounds it as an int8 cache would."""

    def __init__(self, max_seq_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (1, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def store(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return k, v

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        k, v = self.store(k, v)
        self.k_cache.index_copy_(2, input_pos, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(2, input_pos, v.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, head_dim], cos / sin [1, T, 1, head_dim]."""
    return x * cos + rotate_half(x) * sin


def rope_tables(head_dim: int, max_seq_len: int, theta: float,
                yarn: Yarn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_seq_len, head_dim] in float32, computed as transformers computes them (YaRN: runtimes/rope.py)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    scale = 1.0
    if yarn is not None:
        keep = torch.tensor(yarn.extrapolation_weights(head_dim, theta), dtype=torch.float32)
        inv_freq = inv_freq / yarn.factor * (1 - keep) + inv_freq * keep
        scale = yarn.attention_factor
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    if scale == 1.0:
        return angles.cos(), angles.sin()
    return angles.cos() * scale, angles.sin() * scale


class Attend(nn.Module):
    """The part of attention targets replace: the new keys and values into the cache, then causal grouped-query
    attention over it. q, k, v come as [B, T, heads, head_dim] after QK-norm and RoPE; the result is
    [B, T, heads * head_dim]. Without a cache (calibration) it attends within the chunk under `mask`."""

    def __init__(self, n_heads: int, n_kv_heads: int):
        super().__init__()
        self.groups = n_heads // n_kv_heads
        self.kv_cache: KVCache | None = None

    def forward(self, q, k, v, input_pos: torch.Tensor, mask: torch.Tensor | None):
        bsz, seq_len = q.shape[:2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
            if mask is None:  # causal: a query sees the cache up to its own position
                mask = (torch.arange(k.shape[2])[None, :] <= input_pos[:, None])[None, None]
        k = k.repeat_interleave(self.groups, dim=1).to(q.dtype)
        v = v.repeat_interleave(self.groups, dim=1).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(bsz, seq_len, -1)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        bias = args.attention_bias
        self.q_proj = nn.Linear(args.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, args.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, args.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, args.rms_norm_eps)
        self.attend = Attend(self.n_heads, self.n_kv_heads)

    def forward(self, x, cos, sin, mask, input_pos):
        bsz, seq_len, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(bsz, seq_len, self.n_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim))
        v = self.v_proj(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim)
        return self.o_proj(self.attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, input_pos, mask))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def forward(self, x, cos, sin, mask, input_pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3(nn.Module):
    """Parameter names mirror the HF checkpoint without its `model.` prefix."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.num_hidden_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.max_seq_len = 0

    def setup_caches(self, max_seq_len: int, dtype: torch.dtype | None = None, kv_cache: bool = True,
                     kv_dtype: torch.dtype | None = None, make_cache=None) -> None:
        """The RoPE tables and (kv_cache) the reference KV cache for `max_seq_len` positions, stored in kv_dtype
        (default: dtype; a float16 cache under float32 compute models a bundle that stores its cache so), or
        `make_cache(layer_index)`'s cache per layer (a KVCache subclass: runtimes/quant/kv.Int8KVCache models an
        int8 cache)."""
        dtype = dtype or self.embed_tokens.weight.dtype
        check_context(self.args, max_seq_len)
        self.max_seq_len = max_seq_len
        a = self.args
        for i, layer in enumerate(self.layers):
            cache = None
            if kv_cache:
                cache = make_cache(i) if make_cache else KVCache(max_seq_len, a.num_key_value_heads, a.head_dim,
                                                                 kv_dtype or dtype)
            layer.self_attn.attend.kv_cache = cache
        cos, sin = rope_tables(self.args.head_dim, max_seq_len, self.args.rope_theta, self.args.rope_scaling)
        self.register_buffer("rope_cos", cos.to(dtype), persistent=False)
        self.register_buffer("rope_sin", sin.to(dtype), persistent=False)

    def rope(self, input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, T, 1, head_dim] at positions input_pos [T]."""
        return self.rope_cos[input_pos][None, :, None], self.rope_sin[input_pos][None, :, None]

    def hidden_states(self, tokens: torch.Tensor, input_pos, rope=None, mask=None) -> torch.Tensor:
        """tokens [1, T] → the last layer's output [1, T, hidden], writing the caches. `input_pos` is what the
        attention cores in use take (positions [T] for the reference); `rope` (cos, sin) defaults to
        self.rope(input_pos); `mask` to causal over the cache."""
        cos, sin = rope if rope is not None else self.rope(input_pos)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, input_pos)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [1, T] at positions input_pos [T] → logits [1, T, vocab]; writes the KV cache."""
        return self.logits(self.hidden_states(tokens, input_pos))

    def prefill(self, tokens: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        input_pos = torch.arange(start_pos, start_pos + tokens.shape[-1])
        return self.forward(tokens.view(1, -1), input_pos)

    def decode(self, token: int, pos: int) -> torch.Tensor:
        return self.forward(torch.tensor([[token]]), torch.tensor([pos]))[0, -1]


def share_weights(module: Qwen3) -> Qwen3:
    """A new Qwen3 whose parameters and RoPE tables are `module`'s tensors (nothing copied) but whose module
    objects are its own: a target swaps modules and converts dtypes in it without touching `module`. It has no
    KV cache; the target installs its attention cores."""
    with torch.device("meta"):
        twin = Qwen3(module.args)
    twin.load_state_dict(module.state_dict(), assign=True, strict=True)
    if module.args.tie_word_embeddings:
        twin.lm_head.weight = twin.embed_tokens.weight
    twin.max_seq_len = module.max_seq_len
    twin.register_buffer("rope_cos", module.rope_cos, persistent=False)
    twin.register_buffer("rope_sin", module.rope_sin, persistent=False)
    for layer in twin.layers:
        layer.self_attn.attend.kv_cache = None
    return twin.eval()


def check_context(args: ModelArgs, max_seq_len: int) -> None:
    """Before any cache is allocated: a context the model supports."""
    from runtimes.errors import UserError

    if not 1 <= max_seq_len <= args.context_limit:
        limit = f"YaRN's factor x original_max_position_embeddings, {args.context_limit}" if \
            args.context_limit > args.max_position_embeddings else \
            f"max_position_embeddings, {args.max_position_embeddings}"
        raise UserError(f"a context of {max_seq_len} positions is outside what the model supports (1 to its "
                        f"{limit}); choose a smaller --max-seq-len")


def hf_name(name: str) -> str:
    """This module's parameter name → the HF checkpoint's (the inverse of sanitize's renaming)."""
    return name if name == "lm_head.weight" else f"model.{name}"


def sanitize(weights: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Map HF checkpoint names to this module's names and check that nothing is missing or extra."""
    from runtimes.errors import UserError

    out = {}
    for name, tensor in weights.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from rope_theta
        out[name.removeprefix("model.")] = tensor
    if args.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in Qwen3(args).named_parameters()}
    missing = sorted(expected.keys() - out.keys())
    extra = sorted(out.keys() - expected.keys())
    if missing:
        hint = " (an untied checkpoint without lm_head.weight?)" if missing == ["lm_head.weight"] else ""
        raise UserError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[0]}{hint}; "
                        "it does not match its config.json")
    if extra:
        raise UserError(f"checkpoint has {len(extra)} weights the config does not describe, e.g. {extra[0]}; "
                        "check num_hidden_layers and tie_word_embeddings in config.json")
    for name, tensor in out.items():
        if tuple(tensor.shape) != expected[name]:
            raise UserError(f"weight {name} has shape {tuple(tensor.shape)} but config.json implies {expected[name]}")
    return out


def from_pretrained(model: str | Path, max_seq_len: int = 1024, dtype: torch.dtype = torch.float32,
                    lazy_linears: bool = False, kv_cache: bool = True):
    """Load a Qwen3 checkpoint (dir, hub id or 'tiny') into the edge module → (module, config dict).

    lazy_linears: the decoder linears and the embedding/LM head tables are left in the file (meta parameters;
    `module.lazy_weights` reads each on demand), for exports that quantize them one at a time. kv_cache=False: RoPE
    tables only, no reference KV cache (exports, whose targets bring their own)."""
    from runtimes import checkpoint
    from runtimes.errors import UserError

    model_dir = checkpoint.resolve_model_dir(str(model))
    if (model_dir / checkpoint.QUANT_RECIPE).is_file():
        raise UserError(f"{model} is a quantized checkpoint; its module is runtimes.quant.recipe.load_module's")
    config = checkpoint.load_config(model_dir)
    args = ModelArgs.from_config(config)
    lazy = (lambda name: name.endswith(("proj.weight", "embed_tokens.weight", "lm_head.weight"))) \
        if lazy_linears else None
    check_model_memory(args, max_seq_len, dtype, str(model), streamed=lazy_linears)
    weights = sanitize(checkpoint.load_state_dict(model_dir, lazy), args)
    return module_from_weights(args, weights, max_seq_len, dtype, kv_cache), config


def check_model_memory(args: ModelArgs, max_seq_len: int, dtype: torch.dtype, what: str,
                       streamed: bool = False) -> None:
    """Before reading a weight: the module's weights, KV cache at max_seq_len and working memory fit (see
    runtimes.memory)."""
    check_context(args, max_seq_len)
    need = model_need(asdict(args), max_seq_len, torch.empty((), dtype=dtype).element_size(), streamed)
    check_memory(need, what, "choose a smaller --max-seq-len")


def module_from_weights(args: ModelArgs, weights: dict, max_seq_len: int, dtype: torch.dtype = torch.float32,
                        kv_cache: bool = True) -> Qwen3:
    """A ready module (eval mode, caches for max_seq_len) from weights named as this module names them.
    `weights` is consumed: converted to `dtype` in place, so peak memory holds one copy of the model.
    LazyTensor entries become meta parameters; `module.lazy_weights` maps their names to them."""
    from runtimes.checkpoint import LazyTensor

    with torch.device("meta"):
        module = Qwen3(args)
    lazy = {}
    for name in list(weights):  # in place, so each stored-dtype tensor is freed as soon as it is converted
        if isinstance(weights[name], LazyTensor):
            lazy[name] = weights[name]
            weights[name] = torch.empty(weights[name].shape, dtype=dtype, device="meta")
        else:
            weights[name] = weights[name].to(dtype)
    if args.tie_word_embeddings:
        weights["lm_head.weight"] = weights["embed_tokens.weight"]
    module.load_state_dict(weights, assign=True, strict=True)
    if args.tie_word_embeddings:
        module.lm_head.weight = module.embed_tokens.weight
    module.setup_caches(max_seq_len, dtype, kv_cache=kv_cache)
    module.lazy_weights = lazy
    return module.eval()
