"""ONNX target, CPU profile: one graph for prefill and decode on ONNX Runtime's fused CPU kernels.

    inputs   input_ids int64 [1, S], position_ids int64 [1, S] (absolute positions P..P+S-1),
             past_key_{i} / past_value_{i} [1, kv_heads, C, head_dim] (the KV cache's dtype)
    outputs  logits float32 [1, 1, vocab] (the last position's), present_key_{i} / present_value_{i}
             [1, kv_heads, max(C, P+S), head_dim]

Only the last position's logits: generation needs no other, and the LM head over every row of a prompt is a quarter
of a 2048-token prompt's multiply-adds for the 0.6B shape (ORT-GenAI's builder prunes the same way with its
prune_lm_head option, and its runtime accepts such graphs). A teacher-forced evaluation that wants every position's
logits feeds the tokens one per call (runtimes.backends.prefill_last_position), as for ExecuTorch programs.

Attention is ONNX Runtime's GroupQueryAttention (RoPE, causal grouped-query attention and the KV update in one
kernel). With C = max_seq_len and each present bound to its past's buffer (the onnxruntime backend and ORT-GenAI
do this) the cache is updated in place; with C = P (a growing past) it is concatenated. Under an int8 cache each
layer's attention is an If on the call's length S. A call of fewer than FLOAT_ATTENTION_MIN_TOKENS tokens (a decode
step, a short chat turn) runs the kernel's int8 mode, the faster one for a step. A longer one, at any start P, runs
RoPE, rounds its keys and values to the cache's codes, attends in float over the cache's first P codes and its own,
and writes its codes into the cache with ScatterND, in place too: ONNX Runtime's float kernel takes a long prompt
several times faster than its int8 one (docs/onnx.md has the numbers).

The numerics are runtimes/model.py's. Quantized weights are our quantizer's exact codes and scales:
- int4 linears, and int8 ones with int8 activations, are MatMulNBits (ONNX Runtime's block-quantized matmul); at
  accuracy level 4 it rounds its input to int8 per block and runs integer dot products (the manifest says
  `activations: int8-dynamic-per-block`, and parity's reference rounds the same way), at level 0 it keeps fp32;
- with float activations an int8 linear is DequantizeLinear + MatMul;
- a quantized embedding table is gathered by GatherBlockQuantized from the very bytes the tied LM head's
  MatMulNBits reads (one table in the file, as ORT-GenAI's builder shares its table).
q/k/v and gate/up are one matmul each over their stacked weights, then a Split (one activation rounding and one
kernel call instead of three and two; exact: every row keeps its codes). Residual adds and RMSNorms are ONNX
Runtime's fused SkipSimplifiedLayerNormalization / SimplifiedLayerNormalization.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from exporter.targets.onnx_graph import Graph, as_numpy, nbits_weights, save
from runtimes.quant.rtn import QuantizedTensor

OPSET = 21
# An int8-cache graph attends in float from this many tokens a call on. The float path first copies the cache's P
# codes out as floats, which a few tokens at a long P do not repay: at P = 2000 (0.6B shape, 2 layers, 2 threads) a
# 2-token call took 39 ms against 12 ms on the int8 kernel, 32 tokens 100 against 92, 128 tokens 188 against 253
FLOAT_ATTENTION_MIN_TOKENS = 32


class AttentionInputs(NamedTuple):
    """What every layer's attention reads besides its own q, k, v and cache: first GroupQueryAttention's inputs, in
    the kernel's order (`kernel`), then what an int8 cache's If reads."""
    seqlens_k: object  # the total length after this call, minus one
    total_sequence_length: object
    cos_cache: object
    sin_cache: object
    is_prompt: object  # bool: this call takes the float path (FLOAT_ATTENTION_MIN_TOKENS; None without an int8 cache)
    position_ids: object  # int64 [1, S]

    @property
    def kernel(self) -> tuple:
        return self[:4]

MODEL_FILE = "model.onnx"


def register_ort_schemas() -> None:
    """Teach onnx.checker ONNX Runtime's fused RMSNorm, which ORT registers in the default domain (so the checker,
    which knows only standard ops there, would reject the graph)."""
    from onnx.defs import OpSchema, has, register_schema

    if has("SimplifiedLayerNormalization"):
        return
    floats = ["tensor(float)", "tensor(float16)"]
    register_schema(OpSchema(
        "SimplifiedLayerNormalization", "", 1, doc="ONNX Runtime's RMSNorm: X / sqrt(mean(X^2) + epsilon) * scale",
        inputs=[OpSchema.FormalParameter("X", "T"), OpSchema.FormalParameter("scale", "V")],
        outputs=[OpSchema.FormalParameter("Y", "V")], type_constraints=[("T", floats, ""), ("V", floats, "")],
        attributes=[OpSchema.Attribute("axis", OpSchema.AttrType.INT, "normalized axis"),
                    OpSchema.Attribute("epsilon", OpSchema.AttrType.FLOAT, "added to the mean square")]))


class CpuBuilder:
    """fp16: weights and activations in float16 (RMSNorm and softmax in float32); int8_activations: MatMulNBits
    at accuracy level 4; kv_dtype: the KV cache's dtype (a float16 cache under float32 activations: attention runs
    in float16, its inputs cast to it; an int8 cache takes kv_scales [layers, 2, kv_heads, head_dim], the static
    per-channel scales of runtimes/quant/kv.py)."""

    def __init__(self, module, quantized: dict[str, QuantizedTensor], max_seq_len: int, fp16: bool = False,
                 int8_activations: bool = False, kv_dtype: str = "float32", kv_scales: torch.Tensor | None = None):
        if (kv_dtype == "int8") != (kv_scales is not None):
            raise ValueError("an int8 KV cache needs its scales, and only it takes them")
        self.m, self.q, self.a = module, quantized, module.args
        self.kv_scales = kv_scales
        self.g = Graph("qwen3", OPSET)
        self.max_seq_len = max_seq_len
        self.level = 4 if int8_activations else 0
        self.fp16 = fp16
        self.act = "float16" if fp16 else "float32"
        self.kv_dtype = "float16" if fp16 and kv_dtype != "int8" else kv_dtype
        # GroupQueryAttention computes in its cache's float type, or in the activations' under an int8 cache
        self.attn_dtype = self.act if kv_dtype == "int8" else self.kv_dtype
        self.np_act = np.float16 if fp16 else np.float32
        self.np_attn = np.float16 if self.attn_dtype == "float16" else np.float32

    # -- pieces ---------------------------------------------------------------------------------
    def float_weight(self, name: str, array) -> object:
        return self.g.weight(name, lambda: np.asarray(array(), dtype=self.np_act))

    def cast(self, x, dtype: str):
        from exporter.targets.onnx_graph import DTYPES

        return self.g.op("Cast", x, to=DTYPES[dtype])

    def to_fp32(self, x):
        return self.cast(x, "float32") if self.fp16 else x

    def from_fp32(self, x):
        return self.cast(x, "float16") if self.fp16 else x

    def norm_weight(self, name: str):
        return self.g.weight(name, lambda: as_numpy(self.m.get_parameter(name)))

    def rms_norm(self, x, weight_name: str):
        normed = self.g.op("SimplifiedLayerNormalization", self.to_fp32(x), self.norm_weight(weight_name), axis=-1,
                           epsilon=float(self.a.rms_norm_eps))
        return self.from_fp32(normed)

    def add_norm(self, x, delta, weight_name: str):
        """(RMSNorm(x + delta), x + delta): one SkipSimplifiedLayerNormalization (fp16 graphs add, then norm in
        fp32)."""
        if self.fp16:
            total = self.g.op("Add", x, delta)
            return self.rms_norm(total, weight_name), total
        normed, mean, inv_std, total = self.g.op("SkipSimplifiedLayerNormalization", x, delta,
                                                 self.norm_weight(weight_name), outputs=4, domain="com.microsoft",
                                                 epsilon=float(self.a.rms_norm_eps))
        mean.name = inv_std.name = ""  # optional outputs left unset: the kernel does not compute them
        return normed, total

    def quantized_matmul(self, x, name: str, qt: QuantizedTensor):
        out_features, in_features = qt.shape
        if qt.bits == 4 or self.level == 4:
            blob, scales, zeros, block = nbits_weights(self.g, name, qt)
            inputs = [x, blob, scales] + ([zeros] if zeros is not None else [])
            return self.g.op("MatMulNBits", *inputs, domain="com.microsoft", K=in_features, N=out_features,
                             bits=qt.bits, block_size=block, accuracy_level=self.level)
        # int8 per output channel with float activations: DequantizeLinear on the transposed codes, scale per column
        codes = self.g.weight(f"{name}.qweight_t", lambda: qt.q.numpy().T)
        scales = self.g.weight(f"{name}.scales", lambda: qt.scales.float().numpy().reshape(-1))
        return self.g.op("MatMul", x, self.g.op("DequantizeLinear", codes, scales, axis=1))

    def linear(self, x, name: str):
        qt = self.q.get(name)
        if qt is None:
            return self.g.op("MatMul", x, self.float_weight(name, lambda: as_numpy(self.m.get_parameter(name)).T))
        return self.quantized_matmul(x, name, qt)

    def fused_linear(self, x, names: list[str], fused_name: str, splits: list[int] | None = None,
                     divisors: dict[str, torch.Tensor] | None = None) -> list:
        """Linears sharing their input as one matmul over stacked weights, then a Split into `splits` (by default
        each linear's width); separate linears, joined, when their formats differ. `divisors[name]` [out] divide a
        linear's output rows, folded into its weights (a quantized weight keeps its codes: its rows' scales are
        divided)."""
        divisors = divisors or {}
        sizes = [self.m.get_parameter(n).shape[0] for n in names]
        splits = splits or sizes
        qts = [self.q.get(n) for n in names]
        if all(qt is None for qt in qts):
            def stacked():
                rows = [self.m.get_parameter(n).detach() for n in names]
                return torch.cat([w / divisors[n][:, None] if n in divisors else w for n, w in zip(names, rows)])

            out = self.g.op("MatMul", x, self.float_weight(fused_name, lambda: as_numpy(stacked()).T))
        elif all(qt is not None for qt in qts) and len({(qt.bits, qt.group_size, qt.symmetric) for qt in qts}) == 1:
            scales = [qt.scales / divisors[n].to(qt.scales.dtype)[:, None] if n in divisors else qt.scales
                      for n, qt in zip(names, qts)]
            qt = QuantizedTensor(torch.cat([t.q for t in qts]), torch.cat(scales),
                                 None if qts[0].symmetric else torch.cat([t.zeros for t in qts]), qts[0].bits,
                                 qts[0].group_size)
            out = self.quantized_matmul(x, fused_name, qt)
        else:
            outs = [self.linear(x, n) for n in names]
            outs = [self.g.op("Div", o, self.float_weight(f"{n}.row_divisors", lambda n=n: as_numpy(divisors[n])))
                    if n in divisors else o for n, o in zip(names, outs)]
            if splits == sizes:
                return outs
            out = self.g.op("Concat", *outs, axis=-1)
        return list(self.g.op("Split", out, self.g.const(splits), outputs=len(splits), axis=-1))

    def embed(self, input_ids):
        """Rows of the embedding table for input_ids, as activations [1, S, hidden]."""
        g, qt = self.g, self.q.get("embed_tokens.weight")
        if qt is None:
            table = self.float_weight("embed_tokens.weight", lambda: as_numpy(self.m.embed_tokens.weight))
            return g.op("Gather", table, input_ids)
        if qt.bits == 8 and self.level == 0:  # the float-activation head reads the codes by DequantizeLinear
            codes = g.weight("embed_tokens.weight.qweight", lambda: qt.q.numpy())
            scales = g.weight("embed_tokens.weight.row_scales", lambda: qt.scales.float().numpy().reshape(-1))
            rows = self.cast(g.op("Gather", codes, input_ids), "float32")
            row_scales = g.op("Unsqueeze", g.op("Gather", scales, input_ids), g.const([-1]))
            return self.from_fp32(g.op("Mul", rows, row_scales))
        blob, scales, zeros, block = nbits_weights(g, "embed_tokens.weight", qt)
        vocab, hidden = qt.shape
        data = g.op("Reshape", blob, g.const([vocab, -1]))  # [vocab, hidden * bits / 8]: the head's very bytes
        inputs = [data, input_ids, scales] + ([zeros] if zeros is not None else [])  # both [vocab, ...] already
        rows = g.op("GatherBlockQuantized", *inputs, domain="com.microsoft", bits=qt.bits, block_size=block,
                    gather_axis=0, quantize_axis=1)
        return self.from_fp32(rows)

    def logits(self, h):
        """The LM head: float32 logits [1, S, vocab] for hidden states [1, S, hidden]."""
        g, a = self.g, self.a
        head = "embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
        qt = self.q.get(head)
        if qt is not None and (qt.bits == 4 or self.level == 4):
            return self.to_fp32(self.quantized_matmul(h, head, qt))
        flat = g.op("Reshape", h, g.const([-1, a.hidden_size]))
        if qt is None:  # Gemm(x, W, transB): no transposed copy of a (tied) table
            w = self.float_weight(head, lambda: as_numpy(self.m.get_parameter(head)))
        else:
            codes = g.weight(f"{head}.qweight", lambda: qt.q.numpy())
            scales = g.weight(f"{head}.row_scales", lambda: qt.scales.float().numpy().reshape(-1))
            w = g.op("DequantizeLinear", codes, scales, axis=0)
        return g.op("Reshape", self.to_fp32(g.op("Gemm", flat, w, transB=1)), g.const([1, -1, a.vocab_size]))

    def attention(self, i: int, q, k, v, shared: AttentionInputs, past_key, past_value):
        """GroupQueryAttention; a float16 cache under float32 activations runs it in float16, its inputs cast to it.

        An int8 cache runs the kernel's PER_TENSOR mode with scale 1 on keys and values divided by their
        per-channel scales (kv_scales [kv_heads, head_dim] per layer), with the query multiplied by the keys'
        scales and the output by the values': q . (code_k * s) = (q * s) . code_k and sum_t p_t (code_v * s) =
        s * sum_t p_t code_v, so the cache holds the same codes as under PER_CHANNEL (RoPE rotates channel pairs
        that share a scale, so dividing before the rotation is dividing after it), and ONNX Runtime's CPU kernel
        reads a per-tensor cache faster: it need not fetch a scale per channel. q, k and v arrive so scaled, at no
        node of their own: the key scales are in qk_norm's Mul, the value scales divide v_proj's rows (its weights'
        scales: the same codes). That kernel is the fast one for a decode step, and several times slower than its
        float kernel for a prompt, so an int8 cache's attention is an If on the call's length: a step takes
        decode_attention, a prompt prompt_attention (from FLOAT_ATTENTION_MIN_TOKENS tokens on)."""
        cast = self.attn_dtype != self.act
        if cast:
            q, k, v = (self.cast(t, self.attn_dtype) for t in (q, k, v))
        g, a = self.g, self.a
        if self.kv_dtype != "int8":
            out, present_key, present_value = g.op(
                "GroupQueryAttention", q, k, v, past_key, past_value, *shared.kernel, outputs=3, domain="com.microsoft",
                num_heads=a.num_attention_heads, kv_num_heads=a.num_key_value_heads, do_rotary=1,
                rotary_interleaved=0, scale=self.attention_scale)
            return (self.cast(out, self.act) if cast else out), present_key, present_value
        operands = (q, k, v, shared, past_key, past_value)
        out, present_key, present_value = g.op(
            "If", shared.is_prompt, outputs=3,
            then_branch=g.branch(f"layers.{i}.prompt_attention", lambda: self.prompt_attention(*operands)),
            else_branch=g.branch(f"layers.{i}.decode_attention", lambda: self.decode_attention(*operands)))
        value_scale = lambda: as_numpy(self.by_query_head(self.kv_scales[i, 1]).reshape(-1), self.np_attn)  # noqa: E731
        out = g.op("Mul", out, g.weight(f"layers.{i}.self_attn.out_value_scale", value_scale))
        return (self.cast(out, self.act) if cast else out), present_key, present_value

    def by_query_head(self, per_kv_head: torch.Tensor) -> torch.Tensor:
        """[kv_heads, ...] -> [heads, ...]: query head h reads kv head h // (heads / kv_heads)."""
        return per_kv_head.repeat_interleave(self.a.num_attention_heads // self.a.num_key_value_heads, dim=0)

    def value_divisors(self, i: int) -> dict[str, torch.Tensor] | None:
        """An int8 cache's value scales [kv_heads * head_dim] for layer i's v_proj rows (attention() says why)."""
        if self.kv_dtype != "int8":
            return None
        return {f"layers.{i}.self_attn.v_proj.weight": self.kv_scales[i, 1].reshape(-1).float()}

    def qk_norm(self, i: int, qk):
        """q_norm and k_norm of layer i in one: [1, S, heads + kv_heads, head_dim] normalized per head (in float32),
        then one Mul by both norms' weights, and under an int8 cache the query multiplied and the key divided by the
        keys' scales (attention() says why) [heads + kv_heads, head_dim]."""
        g, a = self.g, self.a
        p = f"layers.{i}.self_attn."

        def weights():
            q_weight = self.m.get_parameter(p + "q_norm.weight").detach().float()
            k_weight = self.m.get_parameter(p + "k_norm.weight").detach().float()
            q_rows, k_rows = q_weight.expand(a.num_attention_heads, -1), k_weight.expand(a.num_key_value_heads, -1)
            if self.kv_dtype == "int8":
                key_scale = self.kv_scales[i, 0].float()  # [kv_heads, head_dim]
                q_rows, k_rows = q_rows * self.by_query_head(key_scale), k_rows / key_scale
            return as_numpy(torch.cat([q_rows, k_rows]))

        unit = g.weight("head_norm_unit", lambda: np.ones([a.head_dim], np.float32))
        normed = g.op("SimplifiedLayerNormalization", self.to_fp32(qk), unit, axis=-1, epsilon=float(a.rms_norm_eps))
        return self.from_fp32(g.op("Mul", normed, g.weight(p + "qk_norm_scales", weights)))

    @property
    def attention_scale(self) -> float:
        return float(1.0 / np.sqrt(self.a.head_dim))

    def decode_attention(self, q, k, v, shared: AttentionInputs, past_key, past_value):
        """A step over an int8 cache (q, k, v scaled as attention() says): the kernel's int8 mode, which rotates q
        and k, rounds the new key and value into the cache in place and attends over the codes."""
        a = self.a
        unit = self.g.weight("kv_unit_scale", lambda: np.ones([1], np.float32))
        quantized = (None, None, None, unit, unit)  # position_ids, attention_bias, head_sink, k_scale, v_scale
        return self.g.op("GroupQueryAttention", q, k, v, past_key, past_value, *shared.kernel, *quantized, outputs=3,
                         domain="com.microsoft", num_heads=a.num_attention_heads, kv_num_heads=a.num_key_value_heads,
                         do_rotary=1, rotary_interleaved=0, scale=self.attention_scale, k_quant_type="PER_TENSOR",
                         v_quant_type="PER_TENSOR", kv_cache_bit_width=8)

    def prompt_attention(self, q, k, v, shared: AttentionInputs, past_key, past_value):
        """Several tokens at positions P.. over an int8 cache (q, k, v scaled as attention() says), in float: the new
        keys and values are rounded to the codes the int8 kernel would store (RoPE first; QuantizeLinear at scale 1
        rounds half to even and saturates, as the kernel and runtimes/quant/kv.fake_quant do), the float kernel
        attends over the cache's first P codes and the new ones as floats (code x 1: the scales are in q and the
        output), and ScatterND writes the new codes into the cache at P.. (in place when present is bound to past's
        buffer, as the onnxruntime backend binds it; a past too short to hold them is concatenated with them)."""
        g, a = self.g, self.a
        rope = lambda x, heads: g.op("RotaryEmbedding", x, shared.position_ids, shared.cos_cache,  # noqa: E731
                                     shared.sin_cache, domain="com.microsoft", interleaved=0, num_heads=heads)
        q = rope(q, a.num_attention_heads)
        unit = g.weight(f"kv_unit_scale_{self.attn_dtype}", lambda: np.ones([], self.np_attn))
        zero = g.weight("kv_zero_code", lambda: np.zeros([], np.int8))
        codes = [g.op("QuantizeLinear", rope(k, a.num_key_value_heads), unit, zero),
                 g.op("QuantizeLinear", v, unit, zero)]  # [1, S, kv_heads * head_dim] int8
        as_float = lambda x: self.cast(x, self.attn_dtype)  # noqa: E731
        positions = g.op("Reshape", shared.position_ids, g.const([-1]))  # P .. P + S - 1
        prefix_length = g.op("Gather", positions, g.const([0]))  # [P]
        cached = [g.op("Slice", past, g.const([0]), prefix_length, g.const([2])) for past in (past_key, past_value)]
        # the float kernel needs its (concatenated) present outputs to read a past at all; they are dropped
        out, _, _ = g.op("GroupQueryAttention", q, *(as_float(c) for c in codes + cached), shared.seqlens_k,
                         shared.total_sequence_length, outputs=3, domain="com.microsoft",
                         num_heads=a.num_attention_heads, kv_num_heads=a.num_key_value_heads, do_rotary=0,
                         scale=self.attention_scale)
        new_rows = [g.op("Transpose", g.op("Reshape", c, g.const([0, 0, a.num_key_value_heads, a.head_dim])),
                         perm=[0, 2, 1, 3]) for c in codes]  # [1, kv_heads, S, head_dim]
        # a max_seq_len buffer (the onnxruntime backend's, ORT-GenAI's) holds the new rows; a growing past (C = P)
        # is concatenated, as GroupQueryAttention does
        holds = g.op("LessOrEqual", self.cast(shared.total_sequence_length, "int64"),
                     g.op("Gather", g.op("Shape", past_key), g.const(2)))
        presents = g.op("If", holds, outputs=2,
                        then_branch=g.branch("write_in_place",
                                             lambda: self.write_rows(past_key, past_value, positions, new_rows)),
                        else_branch=g.branch("concatenate", lambda: [
                            g.op("Concat", prefix, rows, axis=2) for prefix, rows in zip(cached, new_rows)]))
        return out, *presents

    def write_rows(self, past_key, past_value, positions, new_rows) -> list:
        """The caches with new_rows [1, kv_heads, S, head_dim] written at `positions` (int64 [S]) by ScatterND."""
        g, kv_heads = self.g, self.a.num_key_value_heads
        # indices (0, head, position) [1, kv_heads, S, 3]: positions [1, 1, S, 1] broadcast over the heads
        row_positions = g.op("Add", g.op("Reshape", positions, g.const([1, 1, -1, 1])),
                             g.const(np.zeros([1, kv_heads, 1, 1])))
        batch_head = g.const(np.stack([np.zeros(kv_heads), np.arange(kv_heads)], -1).reshape(1, kv_heads, 1, 2))
        indices = g.op("Concat", g.op("Expand", batch_head, g.op("Shape", row_positions)), row_positions, axis=-1)
        return [g.op("ScatterND", past, indices, rows) for past, rows in zip((past_key, past_value), new_rows)]

    # -- the graph --------------------------------------------------------------------------------
    def build(self):
        g, a = self.g, self.a
        hd, layers = a.head_dim, a.num_hidden_layers
        entry = entry_point(a, self.max_seq_len, self.kv_dtype)
        inputs = {t["name"]: g.input(t["name"], t["dtype"], t["shape"]) for t in entry["inputs"]}
        cos = g.weight("rope_cos_half", lambda: as_numpy(self.m.rope_cos[:self.max_seq_len, :hd // 2], self.np_attn))
        sin = g.weight("rope_sin_half", lambda: as_numpy(self.m.rope_sin[:self.max_seq_len, :hd // 2], self.np_attn))
        # positions come as position_ids; GQA wants the total length after this call (and that minus one)
        last = g.op("Gather", g.op("Squeeze", inputs["position_ids"], g.const([0])), g.const(-1))
        total = self.cast(g.op("Add", last, g.const(1)), "int32")
        seqlens_k = g.op("Reshape", self.cast(last, "int32"), g.const([1]))
        length = g.op("Gather", g.op("Shape", inputs["input_ids"]), g.const(1))
        is_prompt = (g.op("GreaterOrEqual", length, g.const(FLOAT_ATTENTION_MIN_TOKENS)) if self.kv_dtype == "int8"
                     else None)
        shared = AttentionInputs(seqlens_k, total, cos, sin, is_prompt, inputs["position_ids"])
        x = self.embed(inputs["input_ids"])
        # [1, S, n*hd] <-> [1, S, n, hd] by constant shapes (0 copies the dimension): no shape arithmetic per layer
        heads_shape, flat_shape = g.const([0, 0, -1, hd]), g.const([0, 0, -1])
        q_width, kv_width = a.num_attention_heads * hd, a.num_key_value_heads * hd
        h = self.rms_norm(x, "layers.0.input_layernorm.weight")
        presents = []
        for i in range(layers):
            p = f"layers.{i}."
            qk, v = self.fused_linear(h, [p + f"self_attn.{n}_proj.weight" for n in "qkv"],
                                      p + "self_attn.qkv_proj.weight", splits=[q_width + kv_width, kv_width],
                                      divisors=self.value_divisors(i))
            q, k = g.op("Split", g.op("Reshape", self.qk_norm(i, g.op("Reshape", qk, heads_shape)), flat_shape),
                        g.const([q_width, kv_width]), outputs=2, axis=-1)
            attn, present_key, present_value = self.attention(i, q, k, v, shared, inputs[f"past_key_{i}"],
                                                              inputs[f"past_value_{i}"])
            presents += [present_key, present_value]
            h, x = self.add_norm(x, self.linear(attn, p + "self_attn.o_proj.weight"),
                                 p + "post_attention_layernorm.weight")
            gate, up = self.fused_linear(h, [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
                                         p + "mlp.gate_up_proj.weight")
            act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
            following = f"layers.{i + 1}.input_layernorm.weight" if i + 1 < layers else "norm.weight"
            h, x = self.add_norm(x, self.linear(act, p + "mlp.down_proj.weight"), following)
        last = g.op("Unsqueeze", g.op("Gather", h, g.const(-1), axis=1), g.const([1]))  # [1, 1, hidden]
        outputs = [self.logits(last)] + presents
        for value, t in zip(outputs, entry["outputs"]):
            g.output(value, t["name"], t["dtype"], t["shape"])
        return g.model()


def entry_point(args, max_seq_len: int, kv_dtype: str = "float32") -> dict:
    """Names, dtypes and shapes of the graph's inputs and outputs (strings are dynamic dimensions)."""
    kv = lambda prefix, dim: [{"name": f"{prefix}_{kind}_{i}", "dtype": kv_dtype,  # noqa: E731
                               "shape": [1, args.num_key_value_heads, dim, args.head_dim]}
                              for i in range(args.num_hidden_layers) for kind in ("key", "value")]
    return {"name": "forward", "file": MODEL_FILE,
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, "sequence"]},
                       {"name": "position_ids", "dtype": "int64", "shape": [1, "sequence"]}] + kv("past", "past"),
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 1, args.vocab_size]}]
            + kv("present", "total")}


def export_cpu(module, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int, fp16: bool = False,
               int8_activations: bool = False, kv_dtype: str = "float32",
               kv_scales: torch.Tensor | None = None) -> list[dict]:
    """model.onnx + model.onnx.data into out_dir (checked by onnx.checker) → the manifest's entry points. An int8
    cache's scales are written beside them too (runtimes/quant/kv.py's SCALES_FILE: the parity reference reads
    them)."""
    import onnx

    from runtimes.quant.kv import save_scales

    builder = CpuBuilder(module, quantized, max_seq_len, fp16, int8_activations, kv_dtype, kv_scales)
    model = builder.build()
    if kv_scales is not None:
        save_scales(out_dir, kv_scales)
    save(model, out_dir / MODEL_FILE)
    register_ort_schemas()
    onnx.checker.check_model(str(out_dir / MODEL_FILE))
    return [entry_point(module.args, max_seq_len, builder.kv_dtype)]
