"""ExecuTorch target: a `.pte` with XNNPACK-delegated linears and an in-place KV cache.

The program is runtimes.model's Qwen3 with ExecuTorch's swaps (`for_executorch`) inside a wrapper with the
runner's calling convention (`EdgeProgram`); the forward pass itself is the reference's.

    forward(tokens int64 [1, T], input_pos int64 [1] = position of tokens[0]) -> logits float32 [1, vocab]
                                                                   (the last position, as ExecuTorch's LLM runner reads)

T is dynamic (1 .. max_seq_len), so a prompt is one call and decode is T = 1. The KV cache lives in the
program as mutable buffers [1, positions, kv_heads, head_dim] written in place by ExecuTorch's
`llama::update_cache` op and read by its `llama::custom_sdpa` (causal, GQA), the ops its own LLM exporter uses.

Quantized linears carry our quantizer's exact codes and scales as torchao `IntxUnpackedToInt8Tensor`s. ExecuTorch
1.5.1's XNNPACK partitioner delegates only *dynamically quantized* low-bit linears (8-bit per-token activations ×
int8 per-channel or int4 group-wise weights: XNNPACK's qd8-f32-qc8w / qd8-f32-qb4w kernels); a weight-only
`dequantize + mm` stays outside the delegate and re-dequantizes every weight on every step. So int8, int4 and
awq-int4 run as 8-bit-activation kernels here, and the manifest says so (`quant.activations`); the parity reference
models that activation rounding. The int8 embedding table is gathered by ExecuTorch's `embedding_byte` kernel.
Methods named like ExecuTorch's LLM exporter's metadata (get_max_seq_len, get_eos_ids, ...) let its stock text
runner and Android/iOS LLM APIs run the file.

`--delegate coreml` writes a static single-token program instead (T = 1, enable_dynamic_shape false: the runner
feeds a prompt one token per call), because coremltools rejects symbolic sizes at a partition's inputs. Its
linears are weight-only (Core ML keeps our codes as constexpr ops with float16 scales; it has no dynamically
quantized activations) and run in Core ML partitions; the KV cache stays with ExecuTorch's cache ops on the CPU
(ExecuTorch's open-source Core ML runtime does not bind Core ML states). It runs only on Apple devices.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import exporter.targets.kv8_ops  # noqa: F401  (defines the qwen_edge operators Int8CacheAttend calls)
from exporter.targets.swaps import replace_modules
from runtimes.backends.executorch import load_kernels
from runtimes.model import Attend, Qwen3, share_weights
from runtimes.quiet import c_stderr_hidden, stage
from runtimes.errors import UserError
from runtimes.quant.kv import save_scales
from runtimes.quant.rtn import QuantizedTensor

MODEL_FILE = "model.pte"
ACTIVATIONS = "int8-dynamic-per-token"
INT4_SCALE_DTYPE = "bfloat16"  # XNNPACK's qb4w kernels keep group scales in bf16 (the partitioner converts them)
STATIC_DELEGATES = ("coreml",)  # delegates that need the static single-token program


@dataclass(frozen=True)
class Program:
    """What kind of program to write: its context, float16 or float32, the delegate, and (kv_scales [layers, 2,
    kv_heads, head_dim]) an int8 KV cache on our qwen_edge kernels instead of ExecuTorch's float cache ops."""
    max_seq_len: int
    fp16: bool = False
    delegate: str = "xnnpack"
    kv_scales: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.fp16 else torch.float32

    @property
    def single_token(self) -> bool:
        """A static-shape program (T = 1), for NPU delegates that take no symbolic sizes (Core ML)."""
        return self.delegate in STATIC_DELEGATES


@contextlib.contextmanager
def _quiet():
    """Hide the library deprecation notices export and lowering print (torch pytree, custom-op size checks) and
    the emitter's note that mutated buffers start uninitialized (our caches are written before they are read)."""
    coreml_log = logging.getLogger("executorch.backends.apple.coreml")
    level = coreml_log.level
    coreml_log.setLevel(logging.ERROR)  # "exported with CoreML specification version 9": intended (iOS 18)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="Mutation on a buffer in the model is detected")
            yield
    finally:
        coreml_log.setLevel(level)


def _intx_weight(qt: QuantizedTensor, dtype: torch.dtype, dynamic_activations: bool = True):
    """Our codes and scales as a torchao tensor: with dynamic activations it lowers to XNNPACK's dynamically
    quantized linear; without, to a weight-only dequantize (what the Core ML delegate keeps as constexpr ops).
    Symmetric codes only (export refuses others first)."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor, IntxUnpackedToInt8TensorActivationQuantization)

    return IntxUnpackedToInt8Tensor(
        qt.q.to(torch.int8), qt.scales.to(dtype), torch.zeros_like(qt.scales, dtype=torch.int8),
        torch.int4 if qt.bits == 4 else torch.int8, (1, qt.group_size), dtype,
        IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN if dynamic_activations else None)


class KernelQuantEmbedding(nn.Module):
    """Row gather from our quantized table by ExecuTorch's quantized embedding kernels, which dequantize the rows
    they gather: int8 per row (embedding_byte) or int4 group-wise (embedding_4bit: two codes per byte,
    (even + 8) << 4 | (odd + 8))."""

    def __init__(self, qt: QuantizedTensor, dtype: torch.dtype):
        super().__init__()
        q = qt.q.to(torch.int8)
        if qt.bits == 4:
            shifted = (q + 8).to(torch.uint8).view(q.shape[0], -1, 2)
            q = shifted[..., 0] * 16 + shifted[..., 1]
            scales = qt.scales.to(torch.bfloat16)  # the head's kernel reads bf16 scales: the gather reads the same
        else:
            scales = qt.scales.reshape(-1)
        self.register_buffer("weight", q.contiguous())
        self.register_buffer("scales", scales.to(dtype).contiguous())
        self.bits, self.dtype = qt.bits, dtype

    def forward(self, tokens):
        if self.bits == 4:
            return torch.ops.quantized_decomposed.embedding_4bit.dtype(self.weight, self.scales, None, -8, 7, tokens,
                                                                       dtype=self.dtype)
        return torch.ops.quantized_decomposed.embedding_byte.dtype(self.weight, self.scales, None, -128, 127, tokens,
                                                                   dtype=self.dtype)


class CacheOpsAttend(nn.Module):
    """The attention core on ExecuTorch's cache ops: keys and values written in place into [1, positions, kv_heads,
    head_dim] buffers by `llama::update_cache`, read by `llama::custom_sdpa` (causal from the start position,
    grouped-query). `input_pos` is the start position (an int)."""

    def __init__(self, max_seq_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (1, max_seq_len, n_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def forward(self, q, k, v, input_pos: int, mask=None):
        bsz, seq_len = q.shape[:2]
        torch.ops.llama.update_cache(k, self.k_cache, input_pos)
        torch.ops.llama.update_cache(v, self.v_cache, input_pos)
        out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, input_pos, None, 0.0, True)
        return out.reshape(bsz, seq_len, -1)


class Int8CacheAttend(nn.Module):
    """The attention core on our int8 cache (exporter/targets/kv8_ops.py, kernels in runtimes/kernels/): keys and
    values rounded into int8 buffers [1, kv_heads, positions, head_dim] with static per-channel scales
    (`qwen_edge::kv8_update`), attention over the filled positions only (`qwen_edge::kv8_sdpa`). A step reads a
    quarter of a float32 cache's bytes, and only the positions written so far. scales: [2, kv_heads, head_dim]."""

    def __init__(self, max_seq_len: int, scales: torch.Tensor):
        super().__init__()
        _, n_kv_heads, head_dim = scales.shape
        shape = (1, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=torch.int8), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=torch.int8), persistent=False)
        self.register_buffer("k_scales", scales[0].float().clone(), persistent=False)
        self.register_buffer("v_scales", scales[1].float().clone(), persistent=False)

    def forward(self, q, k, v, input_pos: int, mask=None):
        bsz, seq_len = q.shape[:2]
        torch.ops.qwen_edge.kv8_update(k, self.k_cache, self.k_scales, input_pos)
        torch.ops.qwen_edge.kv8_update(v, self.v_cache, self.v_scales, input_pos)
        out = torch.ops.qwen_edge.kv8_sdpa(q, self.k_cache, self.v_cache, self.k_scales, self.v_scales, input_pos)
        return out.reshape(bsz, seq_len, -1)


class Int8AttentionStep(nn.Module):
    """One layer's attention core on the int8 cache alone, in the program's calling convention (q, k, v after RoPE,
    input_pos [1]): what tests/test_kv8.py and tools/attention_bench.py run (int8_attention_program) to check and
    time the kernels."""

    def __init__(self, max_seq_len: int, scales: torch.Tensor):
        super().__init__()
        self.attend = Int8CacheAttend(max_seq_len, scales)
        self.max_seq_len = max_seq_len

    def forward(self, q, k, v, input_pos):
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + q.shape[1] <= self.max_seq_len)
        return self.attend(q, k, v, start)


def replace_embedding_with_quantized(model: Qwen3, table: QuantizedTensor, dtype: torch.dtype) -> None:
    replace_modules(model, nn.Embedding, lambda name, old: KernelQuantEmbedding(table, dtype))


def replace_linears_with_quantized(model: Qwen3, weights: dict[str, QuantizedTensor], dtype: torch.dtype,
                                   dynamic: bool) -> None:
    """Each linear with a quantized weight computes on torchao tensors of our codes (dynamic: 8-bit dynamic
    activations, XNNPACK's kernels; else weight-only)."""
    for name, linear in model.named_modules():
        qt = weights.get(f"{name}.weight")
        if isinstance(linear, nn.Linear) and qt is not None:
            linear.weight = nn.Parameter(_intx_weight(qt, dtype, dynamic), requires_grad=False)


def replace_attention_with_custom_sdpa(model: Qwen3, max_seq_len: int, dtype: torch.dtype) -> None:
    """Every attention core on ExecuTorch's cache ops (ExecuTorch's own exporter calls its swap
    replace_sdpa_with_custom_op)."""
    a = model.args
    replace_modules(model, Attend, lambda name, old: CacheOpsAttend(max_seq_len, a.num_key_value_heads, a.head_dim,
                                                                    dtype))


def replace_attention_with_int8_cache(model: Qwen3, max_seq_len: int, kv_scales: torch.Tensor) -> None:
    """Every attention core on the int8 cache and our kernels (kv_scales [layers, 2, kv_heads, head_dim])."""
    layer_of = {id(layer.self_attn.attend): i for i, layer in enumerate(model.layers)}
    replace_modules(model, Attend, lambda name, old: Int8CacheAttend(max_seq_len, kv_scales[layer_of[id(old)]]))


def for_executorch(module: Qwen3, quantized: dict[str, QuantizedTensor], program: Program) -> Qwen3:
    """The model with ExecuTorch's swaps, beside `module` (sharing its tensors): weights in the program's dtype,
    quantized linears as torchao tensors of our codes (8-bit dynamic activations, except in a static single-token
    program: Core ML has no dynamically quantized linears), the quantized table gathered by ExecuTorch's embedding
    kernels, and attention on its cache ops or (kv_scales) on the int8 cache."""
    dtype, dynamic = program.dtype, not program.single_token
    model = share_weights(module).to(dtype)
    table = quantized.get("embed_tokens.weight")
    weights = {name: qt for name, qt in quantized.items() if name != "embed_tokens.weight"}
    if table is not None:
        replace_embedding_with_quantized(model, table, dtype)
        if module.args.tie_word_embeddings:
            weights["lm_head.weight"] = table  # the tied head multiplies by the same rows the embedding gathers
    replace_linears_with_quantized(model, weights, dtype, dynamic)
    if program.kv_scales is not None:
        replace_attention_with_int8_cache(model, program.max_seq_len, program.kv_scales)
    else:
        replace_attention_with_custom_sdpa(model, program.max_seq_len, dtype)
    return model


class EdgeProgram(nn.Module):
    """What is exported: forward(tokens [1, T], input_pos [1] = the position of tokens[0]) → logits of the last
    position [1, vocab], as ExecuTorch's LLM runner calls it, around the swapped model."""

    def __init__(self, model: Qwen3, max_seq_len: int, dtype: torch.dtype, single_token: bool = False):
        super().__init__()
        self.model, self.max_seq_len = model, max_seq_len
        # single_token: a static-shape program (T = 1), for NPU delegates that take no symbolic sizes (Core ML)
        self.single_token = single_token
        self.register_buffer("rope_cos", model.rope_cos[:max_seq_len].to(dtype).clone(), persistent=False)
        self.register_buffer("rope_sin", model.rope_sin[:max_seq_len].to(dtype).clone(), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        seq_len = tokens.shape[1]
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + seq_len <= self.max_seq_len)
        if self.single_token:  # a gather by the position tensor: no symbolic size reaches a delegate
            cos = self.rope_cos.index_select(0, input_pos).view(1, 1, 1, -1)
            sin = self.rope_sin.index_select(0, input_pos).view(1, 1, 1, -1)
        else:
            cos = self.rope_cos.narrow(0, start, seq_len).view(1, seq_len, 1, -1)
            sin = self.rope_sin.narrow(0, start, seq_len).view(1, seq_len, 1, -1)
        hidden = self.model.hidden_states(tokens, start, rope=(cos, sin))
        return self.model.logits(hidden[:, -1, :])


def edge_program(module: Qwen3, quantized: dict[str, QuantizedTensor], program: Program) -> EdgeProgram:
    """The program to torch.export: quantized linears as torchao tensors (unwrapped for export)."""
    from torchao.utils import unwrap_tensor_subclass

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's import-time deprecation notice
    load_kernels()
    model = for_executorch(module, quantized, program)
    edge = EdgeProgram(model, program.max_seq_len, program.dtype, program.single_token).eval()
    with _quiet():
        unwrap_tensor_subclass(edge)
    return edge


def metadata_methods(args, max_seq_len: int, bos_id: int, eos_ids: list[int], dynamic_shape: bool = True) -> dict:
    """Constant methods ExecuTorch's LLM runner reads (names as its exporter writes them). Without dynamic
    shapes the runner feeds the prompt one token per call."""
    return {"get_max_seq_len": max_seq_len, "get_max_context_len": max_seq_len, "get_n_layers": args.num_hidden_layers,
            "get_vocab_size": args.vocab_size, "use_kv_cache": True, "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": dynamic_shape, "get_bos_id": bos_id, "get_eos_ids": eos_ids}


def check_delegate(delegate: str) -> None:
    """Fail before any slow work when `delegate`'s SDK is missing here."""
    _partitioners(delegate)


def _partitioners(delegate: str) -> list:
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    if delegate == "coreml":
        try:
            with _quiet():
                import coremltools as ct
                from executorch.backends.apple.coreml.compiler import CoreMLBackend
                from executorch.backends.apple.coreml.partition import CoreMLPartitioner
        except ImportError as exc:
            raise UserError(f"--delegate coreml needs coremltools and ExecuTorch's Core ML backend ({exc}); "
                            "pip install 'qwen-edge[coreml]'") from None
        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=ct.target.iOS18,
                                                     compute_precision=ct.precision.FLOAT16,
                                                     model_type=CoreMLBackend.MODEL_TYPE.MODEL)
        # the KV cache stays with ExecuTorch's update_cache/custom_sdpa ops on the CPU: ExecuTorch's open-source
        # Core ML runtime does not bind Core ML states (pytorch/executorch#21855)
        # Python-level comparisons and arithmetic on the start position (from torch._check and the cache ops'
        # bounds) must stay outside: a Core ML partition cannot take a symbolic integer input
        symbolic = ["ge", "gt", "le", "lt", "eq", "ne", "add", "sub", "mul", "floordiv", "_assert_scalar.default",
                    "_local_scalar_dense.default", "sym_size.int"]
        return [CoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=False,
                                  skip_ops_for_coreml_delegation=symbolic)]
    if delegate == "qnn":
        import os

        root = os.environ.get("QNN_SDK_ROOT")
        if not root or not (Path(root) / "lib" / "x86_64-linux-clang" / "libQnnHtp.so").is_file():
            raise UserError("--delegate qnn needs Qualcomm's QNN SDK (the AI Engine Direct SDK from Qualcomm's "
                            "site): install it and set QNN_SDK_ROOT to its directory, then retry; "
                            "--delegate xnnpack runs on every phone's CPU")
        raise UserError("--delegate qnn: this version lowers to XNNPACK and Core ML only; the QNN SDK was found but "
                        "its static-shape, PT2E-quantized flow is not wired up yet (use --target onnx --profile npu "
                        "for QNN's ONNX Runtime execution provider)")
    raise ValueError(f"unknown delegate {delegate!r}")  # the CLI's choices are the target's (executorch_target.py)


def lower(module: Qwen3, quantized: dict[str, QuantizedTensor], program: Program, bos_id: int, eos_ids: list[int]):
    """torch.export the edge program (dynamic sequence length) and lower it to its delegate → EdgeProgramManager."""
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    partitioners = _partitioners(program.delegate)
    max_seq_len, single_token = program.max_seq_len, program.single_token
    edge = edge_program(module, quantized, program)
    if single_token:
        example, dynamic_shapes = (torch.zeros(1, 1, dtype=torch.long), torch.tensor([0], dtype=torch.long)), None
    else:
        seq = torch.export.Dim("seq_len", min=1, max=max_seq_len)
        example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
        dynamic_shapes = ({1: seq}, None)
    with torch.no_grad(), _quiet():
        with stage("executorch: torch.export"):
            exported = torch.export.export(edge, example, dynamic_shapes=dynamic_shapes, strict=False)
        with stage(f"executorch: lowering to {program.delegate}"), c_stderr_hidden():
            return to_edge_transform_and_lower(
                exported, partitioner=partitioners, compile_config=EdgeCompileConfig(_check_ir_validity=False),
                constant_methods=metadata_methods(module.args, max_seq_len, bos_id, eos_ids, not single_token))


def to_executorch(edge):
    """A lowered program → ExecuTorch's program manager: memory planned for dynamic lengths (sizes from the
    constraints on the symbolic length), graph inputs left to the caller."""
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    return edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True, memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))


def int8_attention_program(scales: torch.Tensor, heads: int, max_seq_len: int, path: Path) -> None:
    """Int8AttentionStep (scales [2, kv_heads, head_dim]) as a .pte at `path`, for any call length."""
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    _, kv_heads, head_dim = scales.shape
    seq = torch.export.Dim("seq", min=1, max=max_seq_len)
    example = (torch.randn(1, 2, heads, head_dim), torch.randn(1, 2, kv_heads, head_dim),
               torch.randn(1, 2, kv_heads, head_dim), torch.tensor([0]))
    with torch.no_grad(), _quiet():
        exported = torch.export.export(Int8AttentionStep(max_seq_len, scales).eval(), example, strict=False,
                                       dynamic_shapes=({1: seq}, {1: seq}, {1: seq}, None))
        edge = to_edge_transform_and_lower(exported, compile_config=EdgeCompileConfig(_check_ir_validity=False))
        Path(path).write_bytes(to_executorch(edge).buffer)


def export_executorch(module: Qwen3, quantized: dict[str, QuantizedTensor], out_dir: Path, program: Program,
                      bos_id: int, eos_ids: list[int]) -> list[dict]:
    """Write model.pte into out_dir (and an int8 cache's scales, which the parity reference reads) → the manifest's
    entry points."""
    edge = lower(module, quantized, program, bos_id, eos_ids)
    with torch.no_grad(), _quiet(), stage("executorch: memory planning and serializing"):
        et = to_executorch(edge)
    del edge
    with open(out_dir / MODEL_FILE, "wb") as f:  # streamed: `et.buffer` would add one contiguous copy of the file
        et.write_to_file(f)
    if program.kv_scales is not None:
        save_scales(out_dir, program.kv_scales)
    return [entry_point(module.args, program)]


def delegation(edge) -> dict:
    """How a lowered program splits: delegate calls, and the matmul / dequantize ops left outside them."""
    graph = edge.exported_program().graph_module.graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    return {"delegate_calls": sum("call_delegate" in t for t in targets),
            "outside": [t for t in targets if any(k in t for k in ("linear", "mm", "dequantize", "quantize_"))]}


def entry_point(args, program: Program) -> dict:
    dtype = "float16" if program.fp16 else "float32"
    L, kv_heads, head_dim = program.max_seq_len, args.num_key_value_heads, args.head_dim
    cache_dtype, cache_shape = ("int8", [1, kv_heads, L, head_dim]) if program.kv_scales is not None else \
        (dtype, [1, L, kv_heads, head_dim])
    return {"name": "forward", "file": MODEL_FILE,
            "inputs": [{"name": "tokens", "dtype": "int64", "shape": [1, 1 if program.single_token else "seq_len"]},
                       {"name": "input_pos", "dtype": "int64", "shape": [1]}],
            "outputs": [{"name": "logits", "dtype": dtype, "shape": [1, args.vocab_size]}],
            "states": [{"name": f"model.layers.{i}.self_attn.attend.{kind}_cache", "dtype": cache_dtype,
                        "shape": cache_shape} for i in range(args.num_hidden_layers) for kind in ("k", "v")]}
