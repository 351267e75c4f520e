"""ONNX target: one graph for prefill and decode, built node by node from the edge module's weights.

    inputs   input_ids int64 [1, S], position_ids int64 [1, S] (absolute positions P..P+S-1),
             past_key_{i} / past_value_{i} float32 [1, kv_heads, C, head_dim]
    outputs  logits float32 [1, S, vocab], present_key_{i} / present_value_{i} [1, kv_heads, max(C, P+S), head_dim]

Attention is ONNX Runtime's GroupQueryAttention. With C = max_seq_len and each present bound to its past's
buffer (the onnxruntime backend does this), the cache is updated in place; with C = P (a growing past) it is
concatenated, as a plain ONNX consumer would run it.

Numerics follow exporter/model.py (rotate-half RoPE, RMSNorm, per-head q/k norm, GQA). Quantized
linears carry our quantizer's exact codes and scales: int4 group-wise as MatMulNBits (ONNX Runtime's
block-quantized matmul), int8 per channel and the int8 embedding / LM head table as DequantizeLinear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from runtimes.quant.packing import pack_int4
from runtimes.quant.rtn import QuantizedTensor

OPSET = 21
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"


def _register_ort_schemas() -> None:
    """Teach onnx.checker ONNX Runtime's fused RMSNorm, which ORT registers in the default domain (so the
    checker, which knows only standard ops there, would reject the CPU graph)."""
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


class Graph:
    """A tiny node builder: every op gets a fresh output name."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0
        self.names: set[str] = set()

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        self.names.add(name)
        return name

    def const(self, values, dtype=np.int64) -> str:
        self.count += 1
        return self.init(f"const_{self.count}", np.asarray(values, dtype=dtype))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", name: str | None = None, **attrs):
        self.count += 1
        base = name or f"{op_type.lower()}_{self.count}"
        outs = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"node_{self.count}", domain=domain,
                                           **attrs))
        return outs[0] if outputs == 1 else outs


def _pack_nibbles(values: torch.Tensor) -> bytes:
    """ONNX (U)INT4 raw data: values in 0..15 (two's complement nibbles for INT4), low nibble first."""
    flat = values.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] | (flat[1::2] << 4)).numpy().tobytes()


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


class Builder:
    """`chunk=None`: the CPU graph (dynamic lengths, past/present KV, MatMulNBits). `chunk=C`: an NPU graph
    with static shapes: C new tokens against a fixed [max_seq_len] cache, standard ONNX ops only (blocked
    int4 as DequantizeLinear), returning the new K/V for the host to write into its cache."""

    def __init__(self, module, quantized: dict[str, QuantizedTensor], max_seq_len: int, chunk: int | None = None,
                 fp16: bool = False, int8_activations: bool = False):
        self.m, self.q, self.g = module, quantized, Graph()
        # MatMulNBits accuracy level 4: ONNX Runtime quantizes the activations to int8 per block of the weight's
        # group size (symmetric) and runs integer dot products; 0 keeps them float32
        self.accuracy_level = 4 if int8_activations else 0
        self.args = module.args
        self.max_seq_len = max_seq_len
        self.chunk = chunk
        # fp16: weights, activations and KV cache in float16; RMSNorm and softmax computed in float32
        self.fp16 = fp16
        self.np_float = np.float16 if fp16 else np.float32
        self.onnx_float = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT

    def weight(self, name: str, array: np.ndarray) -> str:
        return self.g.init(name, array.astype(self.np_float))

    def to_fp32(self, x: str) -> str:
        return self.g.op("Cast", x, to=TensorProto.FLOAT) if self.fp16 else x

    def from_fp32(self, x: str) -> str:
        return self.g.op("Cast", x, to=TensorProto.FLOAT16) if self.fp16 else x

    # -- pieces ---------------------------------------------------------------------------------
    def rms_norm(self, x: str, weight_name: str) -> str:
        g = self.g
        w = g.init(weight_name, _f32(self.m.get_parameter(weight_name)))
        x = self.to_fp32(x)
        if self.chunk is None:  # CPU profile: ONNX Runtime's fused RMSNorm kernel (one node instead of six)
            return self.from_fp32(g.op("SimplifiedLayerNormalization", x, w, axis=-1,
                                       epsilon=float(self.args.rms_norm_eps)))
        mean_square = g.op("ReduceMean", g.op("Mul", x, x), g.const([-1]), keepdims=1)
        inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean_square, g.const(self.args.rms_norm_eps, np.float32))))
        return self.from_fp32(g.op("Mul", g.op("Mul", x, inv), w))

    def linear(self, x: str, name: str) -> str:
        """x [..., in] @ W^T for the module's Linear `name` (a `...weight` parameter name)."""
        return self._linear(x, name, self.m.get_parameter(name), self.q.get(name))

    def fused_linear(self, x: str, names: list[str], fused_name: str) -> list[str]:
        """Linears sharing the input x as one matmul over their weights stacked along the output axis, then
        a Split: one activation quantization and one kernel call instead of len(names). Exact: every output
        row keeps its own codes, scales and zeros. Falls back to separate linears when their formats differ."""
        weights = [self.m.get_parameter(n) for n in names]
        qts = [self.q.get(n) for n in names]
        sizes = [w.shape[0] for w in weights]
        if all(qt is None for qt in qts):
            stacked, qt = torch.cat([w.detach() for w in weights]), None
        elif all(qt is not None for qt in qts) and len({(qt.bits, qt.group_size, qt.symmetric) for qt in qts}) == 1:
            qt = QuantizedTensor(torch.cat([t.q for t in qts]), torch.cat([t.scales for t in qts]),
                                 None if qts[0].symmetric else torch.cat([t.zeros for t in qts]),
                                 qts[0].bits, qts[0].group_size)
            stacked = torch.empty((sum(sizes), weights[0].shape[1]), device="meta")
        else:
            return [self.linear(x, n) for n in names]
        out = self._linear(x, fused_name, stacked, qt)
        return self.g.op("Split", out, self.g.const(sizes), outputs=len(names), axis=-1)

    def _linear(self, x: str, name: str, weight: torch.Tensor, qt: QuantizedTensor | None) -> str:
        g = self.g
        out_features, in_features = weight.shape
        if qt is None:
            return g.op("MatMul", x, self.weight(name, _f32(weight).T))
        if qt.bits == 4 and self.chunk is not None:
            return g.op("MatMul", x, self.blocked_dequantize(name, qt))
        if qt.bits == 4:
            blocks = in_features // qt.group_size
            blob = f"{name}.qweight"
            if blob not in g.names:  # a tied table's blob is already there, written by the embedding
                packed = pack_int4(qt.q, qt.symmetric).numpy().reshape(out_features, blocks, qt.group_size // 2)
                g.init(blob, packed)
            inputs = [x, blob, g.init(f"{name}.scales", qt.scales.numpy().reshape(-1))]
            if not qt.symmetric:  # two 4-bit zero points per byte along the blocks
                zeros = qt.zeros.to(torch.int16)
                if blocks % 2:
                    zeros = torch.nn.functional.pad(zeros, (0, 1))
                zp = (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).to(torch.uint8).numpy().reshape(-1)
                inputs.append(g.init(f"{name}.zeros", zp))
            return g.op("MatMulNBits", *inputs, domain="com.microsoft", K=in_features, N=out_features, bits=4,
                        block_size=qt.group_size, accuracy_level=self.accuracy_level)
        # int8 per output channel: DequantizeLinear on the transposed codes, scale per column
        codes = g.init(f"{name}.qweight", qt.q.numpy().T)
        w = g.op("DequantizeLinear", codes, g.init(f"{name}.scales", qt.scales.numpy().reshape(-1)), axis=1)
        return g.op("MatMul", x, w)

    def blocked_dequantize(self, name: str, qt: QuantizedTensor) -> str:
        """Standard DequantizeLinear (opset 21, block_size) of int4 codes stored [in, out] → float [in, out]."""
        g = self.g
        codes = qt.q.T.contiguous().to(torch.int16)  # [in, out]
        dtype = TensorProto.INT4 if qt.symmetric else TensorProto.UINT4
        g.initializers.append(helper.make_tensor(f"{name}.qweight", dtype, list(codes.shape),
                                                 _pack_nibbles(codes & 0x0F), raw=True))
        g.names.add(f"{name}.qweight")
        inputs = [f"{name}.qweight", g.init(f"{name}.scales", qt.scales.numpy().T.copy())]
        if not qt.symmetric:
            zeros = qt.zeros.T.contiguous().to(torch.int16)
            g.initializers.append(helper.make_tensor(f"{name}.zeros", TensorProto.UINT4, list(zeros.shape),
                                                     _pack_nibbles(zeros), raw=True))
            inputs.append(f"{name}.zeros")
        return g.op("DequantizeLinear", *inputs, axis=0, block_size=qt.group_size)

    def embed(self) -> str:
        """Rows of the embedding table for input_ids, as float activations [1, S, hidden]."""
        g = self.g
        qt = self.q.get("embed_tokens.weight")
        if qt is None:
            return g.op("Gather", self.weight("embed_tokens.weight", _f32(self.m.embed_tokens.weight)), "input_ids")
        if qt.bits == 8 and qt.group_size == qt.shape[1]:
            codes = g.op("Gather", g.init("embed_tokens.weight.qweight", qt.q.numpy()), "input_ids")
            scales = g.init("embed_tokens.weight.scales", qt.scales.numpy().reshape(-1))
            row_scales = g.op("Unsqueeze", g.op("Gather", scales, "input_ids"), g.const([-1]))  # [1, S, 1]
            return g.op("Mul", g.op("Cast", codes, to=TensorProto.FLOAT), row_scales)
        if qt.bits == 4 and self.chunk is None:
            # gather from the same packed table the int4 LM head's MatMulNBits reads: [vocab, groups, g/2] bytes
            hidden, groups = qt.shape[1], qt.shape[1] // qt.group_size
            packed = pack_int4(qt.q, qt.symmetric).numpy().reshape(qt.shape[0], groups, qt.group_size // 2)
            rows = g.op("Gather", g.init("embed_tokens.weight.qweight", packed), "input_ids")  # [1, S, G, g/2]
            low = g.op("BitwiseAnd", rows, g.const(0x0F, np.uint8))
            high = g.op("BitShift", rows, g.const(4, np.uint8), direction="RIGHT")
            pairs = g.op("Concat", g.op("Unsqueeze", low, g.const([-1])), g.op("Unsqueeze", high, g.const([-1])),
                         axis=-1)
            codes = g.op("Cast", g.op("Reshape", pairs, g.const([1, -1, groups, qt.group_size])),
                         to=TensorProto.FLOAT)
            if qt.symmetric:
                zero = g.const(8.0, np.float32)
            else:
                zeros = g.init("embed_tokens.weight.zero_rows", qt.zeros.float().numpy())
                zero = g.op("Unsqueeze", g.op("Gather", zeros, "input_ids"), g.const([-1]))
            scales = g.init("embed_tokens.weight.scale_rows", qt.scales.numpy())  # [vocab, groups]
            values = g.op("Mul", g.op("Sub", codes, zero), g.op("Unsqueeze", g.op("Gather", scales, "input_ids"),
                                                                g.const([-1])))
            return g.op("Reshape", values, g.const([1, -1, hidden]))
        raise ValueError("this ONNX profile stores the embedding as int8 per row, int4 (cpu profile) or unquantized")

    def lm_head(self, x: str) -> None:
        """Writes `logits` [1, S, vocab] as float32."""
        g, a = self.g, self.args
        head = "embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
        qt = self.q.get(head)
        if qt is not None and qt.bits == 4:  # the same MatMulNBits / blocked-QDQ path as every int4 linear
            g.op("Identity", self.to_fp32(self.linear(x, head)), name="logits")
            return
        # Gemm(x [S, hidden], W [vocab, hidden], transB): no transposed copy of the table
        if qt is None:
            w = head if head in g.names else self.weight(head, _f32(self.m.get_parameter(head)))
        elif qt.bits == 8 and qt.group_size == qt.shape[1]:
            codes = f"{head}.qweight"
            if codes not in g.names:
                g.init(codes, qt.q.numpy())
                g.init(f"{head}.scales", qt.scales.numpy().reshape(-1))
            w = g.op("DequantizeLinear", codes, f"{head}.scales", axis=0)
        else:
            raise ValueError("the ONNX target stores the LM head as int8 per row, int4 or unquantized")
        flat = self.to_fp32(g.op("Gemm", g.op("Reshape", x, g.const([-1, a.hidden_size])), w, transB=1))
        g.op("Reshape", flat, g.const([1, -1, a.vocab_size]), name="logits")

    def mlp(self, x: str, prefix: str) -> str:
        """x + SwiGLU(RMSNorm(x)): the second half of a decoder layer."""
        g = self.g
        h = self.rms_norm(x, prefix + "post_attention_layernorm.weight")
        gate = self.linear(h, prefix + "mlp.gate_proj.weight")
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), self.linear(h, prefix + "mlp.up_proj.weight"))
        return g.op("Add", x, self.linear(act, prefix + "mlp.down_proj.weight"))

    # -- the graph ------------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        """The NPU graph (standard ops only); the CPU graph is build_gqa."""
        if self.chunk is None:
            return self.build_gqa()
        g, a = self.g, self.args
        nh, nkv, hd = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        groups = nh // nkv
        cos, sin = self.m.rope_cos[: self.max_seq_len], self.m.rope_sin[: self.max_seq_len]
        cos = g.op("Unsqueeze", g.op("Gather", self.weight("rope_cos", _f32(cos)), "position_ids"), g.const([1]))
        sin = g.op("Unsqueeze", g.op("Gather", self.weight("rope_sin", _f32(sin)), "position_ids"), g.const([1]))
        # static: cache slots [0, L) are valid below the chunk's first position; the chunk is causal in itself
        c, length = self.chunk, self.max_seq_len
        first = g.op("Slice", "position_ids", g.const([0, 0]), g.const([1, 1]))  # [1, 1]
        cached = g.op("Expand", g.op("Less", g.const(np.arange(length)[None]), first), g.const([c, length]))
        visible = g.op("Concat", cached, g.const(np.tril(np.ones((c, c), dtype=bool)), np.bool_), axis=1)
        mask = g.op("Where", visible, g.const(0.0, np.float32), g.const(-np.inf, np.float32))
        mask = g.op("Unsqueeze", mask, g.const([0, 1, 2]))

        x = self.embed()
        seq_shape = g.op("Shape", "input_ids")  # [1, S]
        heads_shape = lambda n: g.op("Concat", seq_shape, g.const([n, hd]), axis=0)  # noqa: E731

        def rope(t: str) -> str:
            first, second = g.op("Split", t, g.const([hd // 2, hd // 2]), outputs=2, axis=-1)
            rotated = g.op("Concat", g.op("Neg", second), first, axis=-1)
            return g.op("Add", g.op("Mul", t, cos), g.op("Mul", rotated, sin))

        for i in range(a.num_hidden_layers):
            p = f"layers.{i}."
            h = self.rms_norm(x, p + "input_layernorm.weight")
            q = g.op("Reshape", self.linear(h, p + "self_attn.q_proj.weight"), heads_shape(nh))
            k = g.op("Reshape", self.linear(h, p + "self_attn.k_proj.weight"), heads_shape(nkv))
            v = g.op("Reshape", self.linear(h, p + "self_attn.v_proj.weight"), heads_shape(nkv))
            q = rope(g.op("Transpose", self.rms_norm(q, p + "self_attn.q_norm.weight"), perm=[0, 2, 1, 3]))
            k = rope(g.op("Transpose", self.rms_norm(k, p + "self_attn.k_norm.weight"), perm=[0, 2, 1, 3]))
            v = g.op("Transpose", v, perm=[0, 2, 1, 3])
            # the host writes the new entries into its fixed cache
            k_all = g.op("Concat", f"past_key_{i}", g.op("Identity", k, name=f"new_key_{i}"), axis=2)
            v_all = g.op("Concat", f"past_value_{i}", g.op("Identity", v, name=f"new_value_{i}"), axis=2)
            # GQA without copying K/V: queries grouped per KV head, broadcast over the group axis
            q5 = g.op("Reshape", q, g.const([1, nkv, groups, -1, hd]))
            k5 = g.op("Unsqueeze", k_all, g.const([2]))
            v5 = g.op("Unsqueeze", v_all, g.const([2]))
            scores = g.op("Mul", g.op("MatMul", q5, g.op("Transpose", k5, perm=[0, 1, 2, 4, 3])),
                          g.const(1.0 / np.sqrt(hd), self.np_float))
            probs = self.from_fp32(g.op("Softmax", g.op("Add", self.to_fp32(scores), mask), axis=-1))
            attn = g.op("Reshape", g.op("MatMul", probs, v5), g.const([1, nh, -1, hd]))
            attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]), g.const([1, -1, nh * hd]))
            x = g.op("Add", x, self.linear(attn, p + "self_attn.o_proj.weight"))
            x = self.mlp(x, p)
        self.lm_head(self.rms_norm(x, "norm.weight"))
        return self.finish()

    def build_gqa(self) -> onnx.ModelProto:
        """The CPU graph: attention is ONNX Runtime's GroupQueryAttention (RoPE, causal GQA and the KV update
        in one kernel). Given a past of max_seq_len positions bound as its own present (the runtime does so), it
        writes the new entries in place: no cache copy per step. A growing past works too (it concatenates)."""
        g, a = self.g, self.args
        nh, nkv, hd = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        half = hd // 2
        cos = self.weight("rope_cos_half", _f32(self.m.rope_cos[: self.max_seq_len, :half]))
        sin = self.weight("rope_sin_half", _f32(self.m.rope_sin[: self.max_seq_len, :half]))
        # positions come as position_ids; GQA wants the total length after this call (and that minus one)
        last = g.op("Gather", g.op("Squeeze", "position_ids", g.const([0])), g.const(-1))
        total = g.op("Cast", g.op("Add", last, g.const(1)), to=TensorProto.INT32)
        seqlens_k = g.op("Reshape", g.op("Cast", last, to=TensorProto.INT32), g.const([1]))
        x = self.embed()
        # [1, S, n*hd] <-> [1, S, n, hd] by constant shapes (0 copies the dimension): no shape arithmetic per layer
        heads_shape, flat_shape = g.const([0, 0, -1, hd]), g.const([0, 0, -1])
        h = self.rms_norm(x, "layers.0.input_layernorm.weight")
        for i in range(a.num_hidden_layers):
            p = f"layers.{i}."
            q, k, v = self.fused_linear(h, [p + f"self_attn.{n}_proj.weight" for n in "qkv"],
                                        p + "self_attn.qkv_proj.weight")
            q = g.op("Reshape", self.rms_norm(g.op("Reshape", q, heads_shape), p + "self_attn.q_norm.weight"),
                     flat_shape)
            k = g.op("Reshape", self.rms_norm(g.op("Reshape", k, heads_shape), p + "self_attn.k_norm.weight"),
                     flat_shape)
            g.count += 1
            attn = f"attn_{g.count}"
            g.nodes.append(helper.make_node(
                "GroupQueryAttention", [q, k, v, f"past_key_{i}", f"past_value_{i}", seqlens_k, total, cos, sin],
                [attn, f"present_key_{i}", f"present_value_{i}"], name=f"node_{g.count}", domain="com.microsoft",
                num_heads=nh, kv_num_heads=nkv, do_rotary=1, rotary_interleaved=0, scale=float(1.0 / np.sqrt(hd))))
            h, x = self.add_norm(x, self.linear(attn, p + "self_attn.o_proj.weight"),
                                 p + "post_attention_layernorm.weight")
            gate, up = self.fused_linear(h, [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
                                         p + "mlp.gate_up_proj.weight")
            act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
            following = f"layers.{i + 1}.input_layernorm.weight" if i + 1 < a.num_hidden_layers else "norm.weight"
            h, x = self.add_norm(x, self.linear(act, p + "mlp.down_proj.weight"), following)
        self.lm_head(h)
        return self.finish()

    def add_norm(self, x: str, delta: str, weight_name: str) -> tuple[str, str]:
        """(RMSNorm(x + delta), x + delta): the residual add and the next norm as ONNX Runtime's
        SkipSimplifiedLayerNormalization (float32 graphs; float16 ones add, then norm in float32)."""
        g = self.g
        if self.fp16:
            x = g.op("Add", x, delta)
            return self.rms_norm(x, weight_name), x
        w = g.init(weight_name, _f32(self.m.get_parameter(weight_name)))
        g.count += 1
        normed, total = f"skipnorm_{g.count}", f"residual_{g.count}"
        g.nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [x, delta, w], [normed, "", "", total],
                                        name=f"node_{g.count}", domain="com.microsoft",
                                        epsilon=float(self.args.rms_norm_eps)))
        return normed, total

    def finish(self) -> onnx.ModelProto:
        """The model around the nodes built so far (which end in `logits`)."""
        g, a = self.g, self.args
        io = entry_point(a, self.chunk, self.max_seq_len, "float16" if self.fp16 else "float32")
        value_info = lambda t: helper.make_tensor_value_info(  # noqa: E731
            t["name"], {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[t["dtype"]],
            t["shape"])
        inputs, outputs = [value_info(t) for t in io["inputs"]], [value_info(t) for t in io["outputs"]]
        graph = helper.make_graph(g.nodes, "qwen3", inputs, outputs, g.initializers)
        domains = [helper.make_opsetid("", OPSET)]
        if any(node.domain == "com.microsoft" for node in g.nodes):
            domains.append(helper.make_opsetid("com.microsoft", 1))
        return helper.make_model(graph, opset_imports=domains, producer_name="qwen-edge")


def entry_point(a, chunk: int | None, max_seq_len: int, kv_dtype: str = "float32") -> dict:
    """Names, dtypes and shapes of a graph's inputs and outputs (strings are dynamic dimensions)."""
    seq = "sequence" if chunk is None else chunk
    past = "past" if chunk is None else max_seq_len
    kv = lambda prefix, dim: [{"name": f"{prefix}_{kind}_{i}", "dtype": kv_dtype,  # noqa: E731
                               "shape": [1, a.num_key_value_heads, dim, a.head_dim]}
                              for i in range(a.num_hidden_layers) for kind in ("key", "value")]
    return {"inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, seq]},
                       {"name": "position_ids", "dtype": "int64", "shape": [1, seq]}] + kv("past", past),
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, seq, a.vocab_size]}]
            + (kv("present", "total") if chunk is None else kv("new", chunk))}


def export_onnx(module, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int,
                npu_chunk: int | None = None, fp16: bool = False, int8_activations: bool = False,
                kv_dtype: str = "float32") -> list[dict]:
    """Write the graph(s) into out_dir → the manifest's entry points.

    CPU profile: model.onnx (exporter/targets/onnx_cpu.py). NPU profile: prefill.onnx (npu_chunk tokens) and
    decode.onnx (1 token), static shapes, sharing one external weights file.
    """
    if npu_chunk is None:
        from exporter.targets.onnx_cpu import export_cpu

        return export_cpu(module, quantized, out_dir, max_seq_len, fp16, int8_activations, kv_dtype)
    kv_dtype = "float16" if fp16 else "float32"
    _register_ort_schemas()
    entries, stored = [], {}
    for name, chunk in (("prefill", npu_chunk), ("decode", 1)):
        model = Builder(module, quantized, max_seq_len, chunk, fp16).build()
        path = out_dir / f"{name}.onnx"
        if not stored:
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=WEIGHTS_FILE, size_threshold=1024)
            saved = onnx.load(str(path), load_external_data=False)
            stored = {t.name: t for t in saved.graph.initializer if t.data_location == TensorProto.EXTERNAL}
        else:  # point the same weights at the bytes the first graph already wrote
            # generated constants are named by build order (const_N) and differ between the graphs: never share them
            kept = [stored[t.name] if t.name in stored and not t.name.startswith("const_") else t
                    for t in model.graph.initializer]
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept)
            onnx.save_model(model, path)
        onnx.checker.check_model(str(path))
        entries.append({"name": name, "file": path.name, **entry_point(module.args, chunk, max_seq_len, kv_dtype)})
    return entries
