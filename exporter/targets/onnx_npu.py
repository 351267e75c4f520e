"""ONNX target, NPU profile: graphs that Qualcomm's Hexagon NPU (HTP) compiles whole through ONNX Runtime's QNN
execution provider with CPU fallback disabled (Snapdragon 8 Gen 2 / 8 Gen 3 / 8 Elite; runtimes/backends/qnn.py).

One weights file (model.onnx.data) serves three graphs:

    embed.onnx    input_ids int64 [1, S] -> inputs_embeds fp16 [1, S, hidden]   the host's row lookup (CPU provider)
    prefill.onnx  a chunk of C tokens                                            HTP
    decode.onnx   one token                                                      HTP

The HTP graphs (S = C or 1, L = max_seq_len), static shapes:

    inputs   inputs_embeds  fp16 [1, S, hidden]
             attention_bias fp16 [1, 1, S, L + S]  added to the scores: 0 where a query may look, MASK_VALUE elsewhere;
                                                   columns [0, L) are the cache's slots, [L, L + S) this call's tokens
             rope_cos, rope_sin fp16 [1, 1, S, head_dim / 2]   cos / sin of each token's RoPE angles
             past_key_{i}   fp16 [1, kv_heads, head_dim, L]   keys kept transposed, so scores = q @ past_key
             past_value_{i} fp16 [1, kv_heads, L, head_dim]
    outputs  logits fp16 [1, S, vocab]
             new_key_{i} fp16 [1, kv_heads, head_dim, S], new_value_{i} fp16 [1, kv_heads, S, head_dim], which the host
             writes into its cache at the tokens' positions

The choices, each one what the QNN EP of onnxruntime-qnn 2.7.0 (QAIRT 2.51) compiled and computed right on its HTP
simulator (docs/qnn.md has the numbers):
- fp16 activations. Every op of a float16 graph maps to HTP and nothing needs calibrating. A DequantizeLinear'd
  weight is taken by the QNN EP only inside a fully quantized QDQ MatMul; MatMulNBits (fp16 activations,
  block-quantized weights) is compiled keeping 4 or 8 bits a weight.
- Linears are MatMulNBits at accuracy level 0 over our quantizer's codes (onnx_graph.nbits_layout): int4 blocks are
  its groups, an int8 row is cut into blocks that repeat the row's scale. MatMulNBits keeps its scales in the
  activations' type, so each scale is rounded to fp16 once: the manifest says int{4,8}_scale_dtype float16 and
  parity's reference rounds them the same way. One MatMulNBits per linear (HTP runs it as a convolution; splitting a
  fused q/k/v output cost the simulator more than the matmul itself).
- RMSNorm is ONNX's RMSNormalization (opset 23, computed in fp32), which QNN maps to its own RmsNorm. Spelled out in
  elementwise ops it squares activations of 1e3-1e4 past fp16's range on HTP. Every norm sees a [1, rows, dim]
  tensor: HTP's RmsNorm gave wrong values on 4-D inputs.
- The embedding is looked up by the host from the int8 table the LM head reads (HTP takes neither the Gather of int8
  codes nor the Cast after it, and a gatherable fp16 table would store the vocabulary twice).
- Mask and RoPE tables are inputs (no integer position arithmetic on the NPU; one graph for every position), and the
  cache is read in place: scores against the cache and against the call's own keys are two MatMuls joined after
  them. Grouped-query attention folds each KV head's query group into the rows of a 4-D MatMul.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx_ir as ir

from exporter.targets.onnx_graph import DTYPE_NAMES, WEIGHTS_FILE, Graph, as_numpy, nbits_weights
from runtimes.errors import UserError
from runtimes.quant.rtn import QuantizedTensor

OPSET = 23  # RMSNormalization
EMBED_FILE = "embed.onnx"
MASK_VALUE = -32768.0  # finite (no inf - inf = NaN) and exp() of it is 0 in fp16
KV_LAYOUT = ("[layers] x key/value, fp16, held by the host: key [1, kv_heads, head_dim, positions] (transposed), "
             "value [1, kv_heads, positions, head_dim]; each call returns new_key/new_value for its tokens")
HOST = ("inputs_embeds = embed.onnx(input_ids) on the CPU; attention_bias [1, 1, S, L + S] = 0 where query s may see "
        "cache slot j < position or new token t <= s, else mask_value; rope_cos/rope_sin [1, 1, S, head_dim / 2] = "
        "cos/sin(position * rope_theta ** (-2i / head_dim)), with architecture.rope_scaling (YaRN) applied where present "
        "(runtimes/rope.py); write new_key/new_value at the tokens' positions")


def check_weights(quantized: dict[str, QuantizedTensor]) -> None:
    """Refuse weights HTP's MatMulNBits or the host's table cannot hold (the CLI refuses the flags that lead here;
    a quantized checkpoint can still bring them; export refuses asymmetric ones for every target that says so)."""
    for name, qt in quantized.items():
        if qt.bits == 4 and name == "embed_tokens.weight":
            raise UserError("the npu profile keeps the embedding / LM head table as int8 per row or fp16; use "
                            "--embedding int8 (default) or none")
        if qt.bits == 4 and qt.group_size not in (16, 32, 64, 128):
            raise UserError(f"int4 groups of {qt.group_size}: the npu profile takes groups of 16 to 128")
        if qt.bits == 8 and qt.group_size != qt.shape[1]:
            raise UserError("the npu profile takes int8 weights per output channel only")


class NpuBuilder:
    """The embed, prefill and decode graphs of one module; their weight tensors are made once and shared."""

    def __init__(self, module, quantized: dict[str, QuantizedTensor], max_seq_len: int):
        self.m, self.q, self.a = module, quantized, module.args
        self.max_seq_len = max_seq_len
        self.tensors: dict[str, ir.TensorProtocol] = {}
        self.head = "embed_tokens.weight" if self.a.tie_word_embeddings else "lm_head.weight"

    def graph(self, name: str) -> Graph:
        return Graph(name, OPSET, self.tensors)

    # -- pieces ---------------------------------------------------------------------------------
    def matmul_nbits(self, g: Graph, x, name: str, qt: QuantizedTensor):
        blob, scales, _, block = nbits_weights(g, name, qt, np.float16)
        return g.op("MatMulNBits", x, blob, scales, domain="com.microsoft", K=qt.shape[1], N=qt.shape[0],
                    bits=qt.bits, block_size=block, accuracy_level=0)

    def quantized_linear(self, g: Graph, x, name: str, qt: QuantizedTensor):
        """A decoder linear over quantized weights (tools/npu_uint16.py overrides it to measure QDQ forms)."""
        return self.matmul_nbits(g, x, name, qt)

    def linear(self, g: Graph, x, name: str):
        """x [1, S, in] @ W^T for the module's Linear weight `name`."""
        qt = self.q.get(name)
        if qt is None:
            return g.op("MatMul", x, g.weight(name, lambda: as_numpy(self.m.get_parameter(name), np.float16).T))
        return self.quantized_linear(g, x, name, qt)

    def norm(self, g: Graph, x, weight_name: str, scale: float = 1.0):
        """RMSNormalization over the last axis of x [1, rows, dim], its weight times `scale` (folded in)."""
        def weight():
            return as_numpy(self.m.get_parameter(weight_name).detach().float() * scale, np.float16)

        w = g.weight(weight_name if scale == 1.0 else f"{weight_name}.scaled", weight)
        return g.op("RMSNormalization", x, w, axis=-1, epsilon=float(self.a.rms_norm_eps))

    def lm_head(self, g: Graph, x):
        qt = self.q.get(self.head)
        if qt is not None:
            return self.matmul_nbits(g, x, self.head, qt)
        # the fp16 table [vocab, hidden] (the embedding's too when tied), read as it is by Gemm's transB
        table = g.weight(self.head, lambda: as_numpy(self.m.get_parameter(self.head), np.float16))
        flat = g.op("Gemm", g.op("Reshape", x, g.const([-1, self.a.hidden_size])), table, transB=1)
        return g.op("Reshape", flat, g.const([1, -1, self.a.vocab_size]))

    # -- graphs ---------------------------------------------------------------------------------
    def build(self, chunk: int) -> ir.Model:
        """The HTP graph for `chunk` tokens a call (prefill: the chunk; decode: 1)."""
        a, L, S = self.a, self.max_seq_len, chunk
        nh, nkv, hd = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        groups = nh // nkv
        g = self.graph("prefill" if chunk > 1 else "decode")
        x = g.input("inputs_embeds", "float16", [1, S, a.hidden_size])
        bias = g.input("attention_bias", "float16", [1, 1, S, L + S])
        cos = g.input("rope_cos", "float16", [1, 1, S, hd // 2])
        sin = g.input("rope_sin", "float16", [1, 1, S, hd // 2])
        past = [(g.input(f"past_key_{i}", "float16", [1, nkv, hd, L]),
                 g.input(f"past_value_{i}", "float16", [1, nkv, L, hd])) for i in range(a.num_hidden_layers)]
        # a KV head's query group shares the mask: [1, 1, groups * S, L + S]
        if groups > 1:
            bias = g.op("Concat", *[bias] * groups, axis=2)
        halves = g.const([hd // 2, hd // 2])

        def rope(t):  # t [1, heads, S, hd]: rotate-half RoPE from half-width tables
            first, second = g.op("Split", t, halves, outputs=2, axis=-1)
            return g.op("Concat", g.op("Sub", g.op("Mul", first, cos), g.op("Mul", second, sin)),
                        g.op("Add", g.op("Mul", second, cos), g.op("Mul", first, sin)), axis=-1)

        def heads_first(t, heads: int):  # [1, S, heads * hd] -> [1, heads, S, hd]
            return g.op("Transpose", g.op("Reshape", t, g.const([1, S, heads, hd])), perm=[0, 2, 1, 3])

        new_kv = []
        for i in range(a.num_hidden_layers):
            p = f"layers.{i}."
            h = self.norm(g, x, p + "input_layernorm.weight")
            q, k, v = (self.linear(g, h, p + f"self_attn.{n}_proj.weight") for n in "qkv")
            # q/k norms per head on [1, S * heads, hd]; 1/sqrt(hd) is folded into q_norm's weight (RoPE is linear)
            q = self.norm(g, g.op("Reshape", q, g.const([1, S * nh, hd])), p + "self_attn.q_norm.weight",
                          scale=1.0 / np.sqrt(hd))
            k = self.norm(g, g.op("Reshape", k, g.const([1, S * nkv, hd])), p + "self_attn.k_norm.weight")
            q, k, v = rope(heads_first(q, nh)), rope(heads_first(k, nkv)), heads_first(v, nkv)
            k_t = g.op("Transpose", k, perm=[0, 1, 3, 2])  # [1, nkv, hd, S]: the cache's key layout
            new_kv.append((k_t, v))
            past_k, past_v = past[i]
            q = g.op("Reshape", q, g.const([1, nkv, groups * S, hd]))
            scores = g.op("Concat", g.op("MatMul", q, past_k), g.op("MatMul", q, k_t), axis=-1)
            probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
            p_past, p_new = g.op("Split", probs, g.const([L, S]), outputs=2, axis=-1)
            attn = g.op("Add", g.op("MatMul", p_past, past_v), g.op("MatMul", p_new, v))  # [1, nkv, groups * S, hd]
            attn = g.op("Transpose", g.op("Reshape", attn, g.const([1, nh, S, hd])), perm=[0, 2, 1, 3])
            x = g.op("Add", x, self.linear(g, g.op("Reshape", attn, g.const([1, S, nh * hd])),
                                           p + "self_attn.o_proj.weight"))
            h = self.norm(g, x, p + "post_attention_layernorm.weight")
            gate, up = self.linear(g, h, p + "mlp.gate_proj.weight"), self.linear(g, h, p + "mlp.up_proj.weight")
            x = g.op("Add", x, self.linear(g, g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up),
                                           p + "mlp.down_proj.weight"))
        g.output(self.lm_head(g, self.norm(g, x, "norm.weight")), "logits", "float16", [1, S, a.vocab_size])
        for i, (k_t, v) in enumerate(new_kv):
            g.output(g.op("Identity", k_t), f"new_key_{i}", "float16", [1, nkv, hd, S])
            g.output(g.op("Identity", v), f"new_value_{i}", "float16", [1, nkv, S, hd])
        return g.model()

    def build_embed(self) -> ir.Model:
        """input_ids [1, S] -> inputs_embeds fp16 [1, S, hidden]; an int8 table is read from the bytes MatMulNBits
        keeps it in (codes + 128, [vocab, blocks, block]; fp16 scales), which a tied LM head reads too."""
        a = self.a
        g = self.graph("embed")
        ids = g.input("input_ids", "int64", [1, "sequence"])
        qt = self.q.get("embed_tokens.weight")
        if qt is None:
            table = g.weight("embed_tokens.weight", lambda: as_numpy(self.m.embed_tokens.weight, np.float16))
            rows = g.op("Gather", table, ids)
        else:
            codes, scales, _, _ = nbits_weights(g, "embed_tokens.weight", qt, np.float16)
            rows = g.op("Cast", g.op("Gather", codes, ids), to=ir.DataType.FLOAT)  # [1, S, blocks, block]
            row_scales = g.op("Gather", scales, ids)  # [1, S, blocks]
            rows = g.op("Mul", g.op("Sub", rows, g.const(128.0, np.float32)),
                        g.op("Unsqueeze", g.op("Cast", row_scales, to=ir.DataType.FLOAT), g.const([-1])))
            rows = g.op("Cast", g.op("Reshape", rows, g.const([1, -1, a.hidden_size])), to=ir.DataType.FLOAT16)
        g.output(rows, "inputs_embeds", "float16", [1, "sequence", a.hidden_size])
        return g.model()


def entry_point(name: str, file: str, model: ir.Model) -> dict:
    def tensor(v: ir.Value) -> dict:
        return {"name": v.name, "dtype": DTYPE_NAMES[v.dtype],
                "shape": [d if isinstance(d, int) else str(d) for d in v.shape]}

    return {"name": name, "file": file, "inputs": [tensor(v) for v in model.graph.inputs],
            "outputs": [tensor(v) for v in model.graph.outputs]}


def export_npu(module, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int, chunk: int,
               builder: NpuBuilder | None = None) -> list[dict]:
    """prefill.onnx, decode.onnx, embed.onnx and their one weights file into out_dir -> the entry points."""
    builder = builder or NpuBuilder(module, quantized, max_seq_len)
    models = {"prefill": builder.build(chunk), "decode": builder.build(1), "embed": builder.build_embed()}
    # every tensor of 1 KiB or more is written once into the shared file (in the order the graphs made them); each
    # graph's initializers then point at those bytes
    store = ir.Graph([], [], nodes=[], name="store", initializers=[
        ir.Value(name=name, shape=ir.Shape(t.shape), type=ir.TensorType(t.dtype), const_value=t)
        for name, t in builder.tensors.items() if t.nbytes >= 1024])
    ir.external_data.unload_from_model(ir.Model(store, ir_version=10), out_dir, WEIGHTS_FILE, size_threshold_bytes=1024)
    external = {v.name: v.const_value for v in store.initializers.values()}
    entries = []
    for name, model in models.items():
        for value in model.graph.initializers.values():
            if value.name in external:
                value.const_value = external[value.name]
        file = EMBED_FILE if name == "embed" else f"{name}.onnx"
        ir.save(model, out_dir / file)
        entries.append(entry_point(name, file, model))
    return entries


def compile_context(bundle_dir: Path, soc: str) -> dict:
    """prefill.onnx and decode.onnx compiled for `soc`'s HTP into ONNX Runtime EPContext models with their QNN
    context binaries, under qnn-<soc>/ -> the manifest's record of them. One binary per graph, each holding its
    weights (QNN's weight sharing between the two was not used: see docs/qnn.md)."""
    import onnx

    from runtimes.backends.qnn import SOCS, create_session, versions
    from runtimes.files import sha256_file

    folder = bundle_dir / f"qnn-{soc}"
    folder.mkdir()
    seconds = {}
    for name in ("prefill", "decode"):
        config = {"ep.context_enable": "1", "ep.context_file_path": str(folder / f"{name}_ctx.onnx"),
                  "ep.context_embed_mode": "0"}
        start = time.perf_counter()
        create_session(bundle_dir / f"{name}.onnx", soc, config)
        seconds[name] = round(time.perf_counter() - start, 3)
    node = onnx.load(str(folder / "decode_ctx.onnx"), load_external_data=False).graph.node[0]
    sdk = next((a.s.decode() for a in node.attribute if a.name == "ep_sdk_version"), None)
    chip = SOCS[soc]
    return {"soc": soc, "soc_model": chip.soc_model, "htp_arch": chip.htp_arch, **versions(), "ep_sdk_version": sdk,
            "entry_points": {name: f"{folder.name}/{name}_ctx.onnx" for name in ("prefill", "decode")},
            "binaries": {f"{folder.name}/{p.name}": {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(folder.glob("*.bin"))},
            "compile_seconds": seconds}


def export_npu_bundle(module, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int, chunk: int,
                      socs: list[str] | None = None) -> tuple[list[dict], dict, dict]:
    """The npu profile's graphs, and context binaries for each SoC in `socs` -> (entry points, the manifest's
    "npu" and "qnn" fields, its quant fields: the graphs keep scales in fp16)."""
    from runtimes.quiet import stage

    check_weights(quantized)
    quant_fields = {f"int{bits}_scale_dtype": "float16" for bits in sorted({qt.bits for qt in quantized.values()})}
    entries = export_npu(module, quantized, out_dir, max_seq_len, chunk)
    fields = {"npu": {"activations": "float16", "chunk": chunk, "mask_value": MASK_VALUE, "host": HOST}}
    if socs:
        from runtimes.backends.qnn import SOCS

        contexts = []
        for soc in socs:
            with stage(f"onnx: compiling the npu graphs for {soc} (HTP v{SOCS[soc].htp_arch})"):
                contexts.append(compile_context(out_dir, soc))
        fields["qnn"] = {"contexts": contexts}
    return entries, fields, quant_fields
