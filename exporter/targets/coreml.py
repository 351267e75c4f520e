"""Core ML target: stateful ML Programs for iOS 18 / macOS 15, in chunks of layers, with fixed-shape prefill and
decode functions for the Neural Engine. docs/coreml.md describes the bundle; in short:

    embed_head.mlpackage   prefill  input_ids int32 [1, T]            -> hidden_states float16 [1, T, hidden]
                           decode   input_ids int32 [1, 1]            -> hidden_states float16 [1, 1, hidden]
                           logits   hidden_states float16 [1, 1, hidden] -> logits float16 [1, 1, vocab]
    chunk_<i>.mlpackage    prefill  hidden_states [1, T, hidden], position int32 [1], causal_mask float16 [1, 1, T, S]
                                    -> hidden_states_out [1, T, hidden]
                           decode   the same with 1 for T
                           states   k_cache, v_cache float16 [layers in the chunk, kv_heads, S, head_dim]

S is max_seq_len and T the prefill length (64, or S if smaller). Every shape is fixed, as the Neural Engine
wants: the start position comes in `position` (where the new keys and values go in the states, and which RoPE
rows apply), and the mask always spans the whole cache. A runtime chains the entry points of one step in the
manifest's order (embedding, each chunk, then the LM head on the last hidden row), with one MLState per chunk.
The prefill and decode functions of a package share their weights (coremltools' multifunction descriptor stores
a weight once), and so do the embedding and the tied LM head in embed_head.mlpackage.

The program is runtimes.model's Qwen3 with Core ML's swaps (`for_coreml`): each attention's `attend` becomes
`StateAttend` (the new keys and values into the chunk's state buffers at the position, attention over the whole
cache under the mask), and quantized linears and the quantized embedding become `torchao.dequantize_affine` on our
quantizer's codes, which coremltools turns into `constexpr_blockwise_shift_scale` ops: the files hold our
int4/int8 codes exactly and the scales in float16 (`quant.int4_scale_dtype` / `int8_scale_dtype`). Traced in
float32 with float16 caches; coremltools' FLOAT16 compute precision makes the whole program fp16 (norms and
attention included: the Neural Engine computes in fp16 only), so every RMSNorm becomes `ScaledRMSNorm`, the same
function computed without squaring values fp16 cannot square. Core ML states are float16 only (iOS 18), so there
is no fp32 Core ML bundle.

Chunks: coremltools holds a converted program's weights several times over, so one package for a 4B model would
need more memory to convert than a 24 GiB machine has, and a package above ~1 GB does not compile for the Neural
Engine on iOS. Layers are split into the fewest chunks of equal layer count whose weights fit CHUNK_BYTES each,
and each chunk is converted on its own, so conversion memory follows the chunk, not the model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtimes import quiet
from exporter.targets.swaps import replace_modules
from runtimes.model import Attend, Qwen3, RMSNorm, share_weights
from runtimes.quant.rtn import QuantizedTensor
from runtimes.errors import UserError

HEAD_FILE = "embed_head.mlpackage"
SCALE_DTYPE = "float16"
PREFILL_LEN = 64
# A chunk's weights at most: half the ~1 GB a Neural Engine model may hold on iOS, for headroom, and small
# enough that converting one stays within a few GB (4B int4: 4 chunks of 9 layers, 447 MiB each)
CHUNK_BYTES = 512 * 2**20
STEPS = ("prefill", "decode")


def chunk_file(index: int) -> str:
    return f"chunk_{index}.mlpackage"


@contextlib.contextmanager
def _quiet():
    """coremltools' notices (untested torch/scikit-learn versions, missing macOS-only proxies) and its progress
    bars (one per conversion stage and pass pipeline), hidden unless --verbose (runtimes/quiet.py)."""
    if quiet.VERBOSE:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("coremltools", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), quiet.progress_bars_hidden():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_coremltools():
    try:
        with _quiet():
            import coremltools as ct
    except ImportError:
        raise UserError("the Core ML target needs coremltools: pip install 'qwen-edge[coreml]'") from None
    _fix_int_cast()
    return ct


def _fix_int_cast() -> None:
    """coremltools 9.0 converts torch's `int` of a compile-time constant with `int(value)`; a traced size (the
    model's `x.shape` in its views) is a one-element array there, which NumPy 2.4 no longer converts (only 0-d
    arrays). Register the same conversion reading the one element; anything else goes to coremltools' own."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    original = _TORCH_OPS_REGISTRY.get_func("int")
    if getattr(original, "reads_one_element", False):
        return

    def _int(context, node):
        x = context[node.inputs[0]]
        if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
            context.add(mb.const(val=int(np.asarray(x.val).reshape(-1)[0]), name=node.name), node.name)
        else:
            original(context, node)

    _int.reads_one_element = True
    _TORCH_OPS_REGISTRY.set_func_by_name(_int, "int")


class DequantWeight(nn.Module):
    """Our codes and fp16 scales; forward dequantizes (coremltools keeps this as a constexpr op). Symmetric codes
    only (export refuses others first)."""

    def __init__(self, qt: QuantizedTensor):
        super().__init__()
        self.register_buffer("q", qt.q.to(torch.int8).contiguous())
        # float16 values (the precision the file keeps them in) held as float32 so the traced graph stays float32
        self.register_buffer("scales", qt.scales.to(torch.float16).float().contiguous())
        self.block = [1, qt.group_size]
        self.qmin, self.qmax = -(2 ** (qt.bits - 1)), 2 ** (qt.bits - 1) - 1

    def forward(self) -> torch.Tensor:
        return torch.ops.torchao.dequantize_affine(self.q, self.block, self.scales, None, torch.int8, self.qmin,
                                                   self.qmax, torch.float32)


class QuantLinear(nn.Module):
    """A linear over a DequantWeight (the tied LM head shares the embedding's)."""

    def __init__(self, weight: DequantWeight):
        super().__init__()
        self.dequant = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequant())


class DequantEmbedding(nn.Module):
    """A row gather from the dequantized table (a DequantWeight, shared with the tied LM head)."""

    def __init__(self, weight: DequantWeight):
        super().__init__()
        self.dequant = weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.dequant())


class StateAttend(nn.Module):
    """The attention core on Core ML states: the new keys and values go into the chunk's state buffers
    [layers, kv_heads, S, head_dim] at layer `index` and positions [start, start + T), then grouped-query attention
    over the whole cache under `mask` [1, 1, T, S] (0 where a query may attend, -inf elsewhere). `input_pos` is the
    start position, an int32 scalar tensor. The buffers belong to the chunk (their names are the states'); this
    module only holds them."""

    def __init__(self, index: int, n_heads: int, n_kv_heads: int, caches: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.index, self.groups = index, n_heads // n_kv_heads
        self._caches = caches  # a tuple, not buffers: the chunk registers them once, as `k_cache` and `v_cache`

    def forward(self, q, k, v, input_pos: torch.Tensor, mask: torch.Tensor):
        bsz, seq_len = q.shape[:2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k_cache, v_cache = self._caches
        i = self.index
        k_cache[i:i + 1, :, input_pos:input_pos + seq_len, :] = k.to(k_cache.dtype)
        v_cache[i:i + 1, :, input_pos:input_pos + seq_len, :] = v.to(v_cache.dtype)
        keys = k_cache[i:i + 1].to(q.dtype).repeat_interleave(self.groups, dim=1)
        values = v_cache[i:i + 1].to(q.dtype).repeat_interleave(self.groups, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return out.transpose(1, 2).reshape(bsz, seq_len, -1)


class ScaledRMSNorm(nn.Module):
    """RMSNorm that stays finite in fp16: x / rms(x) computed as y / rms(y) with y = x / max|x| (the same function;
    the model's RMSNorm squares x in fp32, but converted to fp16 x² overflows from |x| ≈ 256 on, which Qwen's
    hidden states reach). All fp16, so it stays on the Neural Engine, which computes in fp16 only."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = norm.weight
        self.sqrt_eps = math.sqrt(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x.abs().amax(-1, keepdim=True).clamp(min=2.0 ** -14)  # fp16's smallest normal number
        y = x / peak
        floor = self.sqrt_eps / peak  # eps / peak², squared after the division: no overflow
        return self.weight * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + floor * floor))


def replace_rms_norms_with_scaled(model: nn.Module) -> None:
    replace_modules(model, RMSNorm, lambda name, norm: ScaledRMSNorm(norm))


def replace_linears_with_quantized(model: Qwen3, weights: dict[str, QuantizedTensor]) -> None:
    """Each linear with a quantized weight (named as in the full model) multiplies by its dequantized codes."""
    replace_modules(model, nn.Linear, lambda name, linear: QuantLinear(DequantWeight(weights[f"{name}.weight"]))
                    if f"{name}.weight" in weights else None)


def replace_embedding_with_quantized(model: Qwen3, table: QuantizedTensor) -> None:
    """The embedding gathers from the dequantized table; a tied LM head multiplies by the same table."""
    weight = DequantWeight(table)
    replace_modules(model, nn.Embedding, lambda name, embedding: DequantEmbedding(weight))
    if model.args.tie_word_embeddings:
        model.lm_head = QuantLinear(weight)  # the head multiplies by the rows the embedding gathers: one table


def replace_attention_with_states(model: Qwen3, caches: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The attention cores of the model's layers, in order, on the chunk's state buffers (layer i of the chunk
    writes slice i)."""
    a, order = model.args, iter(range(len(model.layers)))
    replace_modules(model, Attend, lambda name, old: StateAttend(next(order), a.num_attention_heads,
                                                                 a.num_key_value_heads, caches))


def for_coreml(module: Qwen3, quantized: dict[str, QuantizedTensor], layers: range | None = None) -> Qwen3:
    """The model with Core ML's weight swaps, beside `module` (sharing its tensors): fp16-safe norms, quantized
    linears and the quantized embedding as dequantize ops on our codes, the tied LM head over the embedding's
    table. With `layers` it keeps only those decoder layers (a chunk's; the chunk installs their attention cores)."""
    model = share_weights(module)
    layers = range(module.args.num_hidden_layers) if layers is None else layers
    model.layers = nn.ModuleList(model.layers[i] for i in layers)
    replace_rms_norms_with_scaled(model)
    # the kept layers' linears under their names in the full model, where the quantized weights are named
    renamed = {f"layers.{position}.{name.split('.', 2)[2]}": qt for position, index in enumerate(layers)
               for name, qt in quantized.items() if name.startswith(f"layers.{index}.")}
    replace_linears_with_quantized(model, {**renamed, **{name: qt for name, qt in quantized.items()
                                                         if not name.startswith("layers.")}})
    if "embed_tokens.weight" in quantized:
        replace_embedding_with_quantized(model, quantized["embed_tokens.weight"])
    return model


class LayerChunk(nn.Module):
    """What a chunk's functions compute: forward(hidden_states [1, T, hidden], position int32 [1], causal_mask
    [1, 1, T, S]) → hidden_states after its layers, writing their keys and values into `k_cache` / `v_cache`."""

    def __init__(self, module: Qwen3, quantized: dict[str, QuantizedTensor], layers: range, max_seq_len: int):
        super().__init__()
        a = module.args
        shape = (len(layers), a.num_key_value_heads, max_seq_len, a.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("rope_cos", module.rope_cos[:max_seq_len].float().clone())
        self.register_buffer("rope_sin", module.rope_sin[:max_seq_len].float().clone())
        model = for_coreml(module, quantized, layers)
        model.embed_tokens = nn.Identity()  # the chunk takes hidden states: the embedding is embed_head's
        replace_attention_with_states(model, (self.k_cache, self.v_cache))
        model.norm = model.lm_head = None  # the LM head's: not part of a chunk
        self.model, self.layers = model, layers

    def forward(self, hidden_states: torch.Tensor, position: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        seq_len = hidden_states.shape[1]
        start = position[0]
        positions = start + torch.arange(seq_len, dtype=position.dtype)
        cos = self.rope_cos.index_select(0, positions).view(1, seq_len, 1, -1)
        sin = self.rope_sin.index_select(0, positions).view(1, seq_len, 1, -1)
        return self.model.hidden_states(hidden_states, start, rope=(cos, sin), mask=causal_mask)


class Embed(nn.Module):
    """embed_head's prefill/decode: forward(input_ids int32 [1, T]) → hidden_states [1, T, hidden]."""

    def __init__(self, model: Qwen3):
        super().__init__()
        self.embed_tokens = model.embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids.long())


class Logits(nn.Module):
    """embed_head's logits: forward(hidden_states [1, 1, hidden]) → logits [1, 1, vocab] (final norm, LM head)."""

    def __init__(self, model: Qwen3):
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden_states)


def _weight_bytes(module: Qwen3, quantized: dict[str, QuantizedTensor], prefix: str) -> int:
    """What a module's weights take in the file: packed codes and fp16 scales, fp16 elsewhere."""
    total = 0
    for name, param in module.named_parameters():
        if not name.startswith(prefix):
            continue
        qt = quantized.get(name)
        total += (qt.q.numel() * qt.bits // 8 + qt.scales.numel() * 2) if qt is not None else param.numel() * 2
    return total


def plan_chunks(module: Qwen3, quantized: dict[str, QuantizedTensor], budget: int = CHUNK_BYTES) -> list[range]:
    """The fewest chunks of consecutive layers, of equal size (the first ones one layer larger when the count does
    not divide), whose weights fit `budget` each (a chunk holds at least one layer)."""
    n_layers = module.args.num_hidden_layers
    sizes = [_weight_bytes(module, quantized, f"layers.{i}.") for i in range(n_layers)]
    count = min(n_layers, max(1, math.ceil(sum(sizes) / budget)))
    while True:
        base, extra = divmod(n_layers, count)
        bounds, start = [], 0
        for c in range(count):
            end = start + base + (1 if c < extra else 0)
            bounds.append(range(start, end))
            start = end
        if count == n_layers or all(sum(sizes[i] for i in r) <= budget for r in bounds):
            return bounds
        count += 1


def prefill_len(max_seq_len: int) -> int:
    return min(PREFILL_LEN, max_seq_len)


def _convert(ct, program: nn.Module, example: tuple, inputs: list, outputs: list, states: list | None = None):
    """Trace `program` on `example` and convert it: an fp16 ML Program for iOS 18 (not compiled: Core ML
    compilation and prediction need macOS)."""
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(program, example, check_trace=False)
        model = ct.convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                           compute_precision=ct.precision.FLOAT16, skip_model_load=True, inputs=inputs,
                           outputs=outputs, states=states or None)
    del traced
    return model


def _find_constants_exactly(blocks) -> dict:
    """coremltools 9.0's const_deduplication.find_constants (which consts of `blocks` hold the same values: the
    weights save_multifunction stores once), comparing values exactly. Its np.allclose turns both arrays into
    float64 temporaries: ~12 GB for the 4B embedding table, which the embedding functions and the tied LM head
    share. Same bytes is what sharing a weight needs."""
    import hashlib

    from coremltools.converters.mil.mil import ListVar
    from coremltools.converters.mil.mil.passes.defs.cleanup.const_deduplication import const_deduplication

    unique2duplicates, seen = {}, {}
    for block in blocks:
        for op in list(block.operations):
            if op.op_type != "const":
                continue
            var = op.outputs[0]
            if isinstance(var, ListVar) or not const_deduplication.should_be_deduplicated(var.val):
                continue
            value = np.ascontiguousarray(var.val)
            digest = hashlib.sha1(memoryview(value.reshape(-1)).cast("B")).hexdigest()
            key = (getattr(op, "weight_key", None), var.dtype, var.shape, value.dtype.str, digest)
            for other in seen.setdefault(key, []):
                if np.array_equal(value, other.val):
                    unique2duplicates[other].append(var)
                    break
            else:
                seen[key].append(var)
                unique2duplicates[var] = []
    return unique2duplicates


def _save_multifunction(ct, functions: dict[str, Path], destination: Path) -> None:
    """Merge saved single-function packages (function name → path) into one package; identical weights are
    stored once."""
    from coremltools.converters.mil.mil.passes.defs.cleanup.const_deduplication import const_deduplication

    desc = ct.utils.MultiFunctionDescriptor()
    for name, path in functions.items():
        desc.add_function(str(path), src_function_name="main", target_function_name=name)
    desc.default_function_name = next(iter(functions))
    original = const_deduplication.__dict__["find_constants"]
    const_deduplication.find_constants = staticmethod(_find_constants_exactly)
    try:
        with _quiet():
            ct.utils.save_multifunction(desc, str(destination))
    finally:
        const_deduplication.find_constants = original
    make_deterministic(destination)


def _hidden(args, seq_len: int, name: str = "hidden_states") -> dict:
    return {"name": name, "dtype": "float16", "shape": [1, seq_len, args.hidden_size]}


def head_io(args, max_seq_len: int) -> dict[str, dict]:
    """embed_head's functions' inputs and outputs, as the manifest records them."""
    io = {step: {"inputs": [{"name": "input_ids", "dtype": "int32", "shape": [1, seq_len]}],
                 "outputs": [_hidden(args, seq_len)]}
          for step, seq_len in zip(STEPS, (prefill_len(max_seq_len), 1))}
    io["logits"] = {"inputs": [_hidden(args, 1)],
                    "outputs": [{"name": "logits", "dtype": "float16", "shape": [1, 1, args.vocab_size]}]}
    return io


def entry_points(args, chunks: list[range], max_seq_len: int) -> list[dict]:
    """The manifest's entry points, in the order a step runs them: the embedding, the chunks, the LM head."""
    head = head_io(args, max_seq_len)
    entries = [{"name": f"embed_head.{step}", "file": HEAD_FILE, "function": step, **head[step]} for step in STEPS]
    for index, layers in enumerate(chunks):
        entries += [{"name": f"chunk_{index}.{step}", "file": chunk_file(index), "function": step,
                     "layers": list(layers), **chunk_io(args, seq_len, max_seq_len, len(layers))}
                    for step, seq_len in zip(STEPS, (prefill_len(max_seq_len), 1))]
    return entries + [{"name": "embed_head.logits", "file": HEAD_FILE, "function": "logits", **head["logits"]}]


def convert_head(ct, module: Qwen3, quantized: dict[str, QuantizedTensor], max_seq_len: int, work: Path,
                 out_dir: Path) -> None:
    """embed_head.mlpackage: the embedding for each step and the LM head, one table when they are tied."""
    args = module.args
    model = for_coreml(module, quantized, range(0))
    embed, logits = Embed(model).eval(), Logits(model).eval()
    conversions = {step: (embed, (torch.zeros(1, seq_len, dtype=torch.int32),),
                          [ct.TensorType("input_ids", shape=(1, seq_len), dtype=np.int32)],
                          [ct.TensorType("hidden_states", dtype=np.float16)])
                   for step, seq_len in zip(STEPS, (prefill_len(max_seq_len), 1))}
    conversions["logits"] = (logits, (torch.zeros(1, 1, args.hidden_size),),
                             [ct.TensorType("hidden_states", shape=(1, 1, args.hidden_size), dtype=np.float16)],
                             [ct.TensorType("logits", dtype=np.float16)])
    saved = {}
    for name, (program, example, inputs, outputs) in conversions.items():
        converted = _convert(ct, program, example, inputs, outputs)
        saved[name] = work / f"embed_head.{name}.mlpackage"
        with _quiet():
            converted.save(str(saved[name]))
        del converted
        gc.collect()
    _save_multifunction(ct, saved, out_dir / HEAD_FILE)


def chunk_io(args, seq_len: int, max_seq_len: int, n_layers: int) -> dict:
    """A chunk function's inputs, outputs and states, as the manifest records them."""
    cache = [n_layers, args.num_key_value_heads, max_seq_len, args.head_dim]
    return {"inputs": [_hidden(args, seq_len), {"name": "position", "dtype": "int32", "shape": [1]},
                       {"name": "causal_mask", "dtype": "float16", "shape": [1, 1, seq_len, max_seq_len]}],
            "outputs": [_hidden(args, seq_len, "hidden_states_out")],
            "states": [{"name": "k_cache", "dtype": "float16", "shape": cache},
                       {"name": "v_cache", "dtype": "float16", "shape": cache}]}


def convert_chunk(ct, module: Qwen3, quantized: dict[str, QuantizedTensor], index: int, layers: range,
                  max_seq_len: int, work: Path, out_dir: Path) -> None:
    """chunk_<index>.mlpackage: prefill and decode over `layers`, sharing their weights. Each function is
    converted and saved before the next, so memory holds one converted function (then the merge) at a time."""
    args = module.args
    program = LayerChunk(module, quantized, layers, max_seq_len).eval()
    state_shape = tuple(program.k_cache.shape)
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=state_shape, dtype=np.float16), name=name)
              for name in ("k_cache", "v_cache")]
    saved = {}
    for step, seq_len in zip(STEPS, (prefill_len(max_seq_len), 1)):
        example = (torch.zeros(1, seq_len, args.hidden_size), torch.zeros(1, dtype=torch.int32),
                   torch.zeros(1, 1, seq_len, max_seq_len))
        model = _convert(ct, program, example,
                         [ct.TensorType("hidden_states", shape=example[0].shape, dtype=np.float16),
                          ct.TensorType("position", shape=(1,), dtype=np.int32),
                          ct.TensorType("causal_mask", shape=example[2].shape, dtype=np.float16)],
                         [ct.TensorType("hidden_states_out", dtype=np.float16)], states)
        saved[step] = work / f"chunk_{index}.{step}.mlpackage"
        with _quiet():
            model.save(str(saved[step]))
        del model
        gc.collect()
    del program
    gc.collect()
    _save_multifunction(ct, saved, out_dir / chunk_file(index))


def export_coreml(module: Qwen3, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int,
                  chunk_bytes: int | None = None) -> list[dict]:
    """Write embed_head.mlpackage and chunk_<i>.mlpackage into out_dir → the manifest's entry points."""
    ct = load_coremltools()
    with _quiet():
        import torchao.quantization.quant_primitives  # noqa: F401  (registers torchao::dequantize_affine)
    chunks = plan_chunks(module, quantized, chunk_bytes or CHUNK_BYTES)
    with tempfile.TemporaryDirectory(prefix="qwen-edge-coreml-") as tmp:
        convert_head(ct, module, quantized, max_seq_len, Path(tmp), out_dir)
        gc.collect()
        for index, layers in enumerate(chunks):
            convert_chunk(ct, module, quantized, index, layers, max_seq_len, Path(tmp), out_dir)
            gc.collect()
    return entry_points(module.args, chunks, max_seq_len)


def make_deterministic(package: Path) -> None:
    """Same model, same bytes: coremltools stamps the conversion date, serializes the spec's metadata map in
    arbitrary order and names the package's items with random UUIDs. Drop the date, re-serialize
    deterministically, and derive the UUIDs from the item paths."""
    import json
    import uuid

    from coremltools.proto import Model_pb2

    spec_path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec.description.metadata.userDefined.pop("com.github.apple.coremltools.conversion_date", None)  # the day
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"qwen-edge:{entry['path']}"))
           for old, entry in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {ids[old]: entry for old, entry in sorted(manifest["itemInfoEntries"].items(),
                                                                           key=lambda kv: kv[1]["path"])}
    manifest["rootModelIdentifier"] = ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4) + "\n")
