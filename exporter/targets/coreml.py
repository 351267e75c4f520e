"""Core ML target: a stateful ML Program `.mlpackage` for iOS 18 / macOS 15.

    inputs   input_ids int32 [1, T] (T in 1 .. chunk), causal_mask float16 [1, 1, T, P + T]
             (0 where a query may attend, -inf elsewhere; its width is the context after this call)
    states   k_cache, v_cache float16 [layers, kv_heads, max_seq_len, head_dim]
    outputs  logits float16 [1, T, vocab]

The host owns positions only through the mask: the program reads the start position as the mask's width minus
T, writes the new K/V into the states at [start, start + T) and attends over [0, start + T). One flexible-shape
function serves prefill (chunks of up to `chunk` tokens) and decode (T = 1): simpler for the apps than separate
enumerated models; the Neural Engine prefers fixed shapes, so a fixed-shape multifunction variant is the
follow-up if on-device profiling shows the ANE rejecting it. Attention keeps heads as a leading dimension
([1, heads, T, head_dim] tensors, the layout Apple's ANE guidance favours) and computes in fp16 with fp32 norms.

Quantized linears and the embedding table are `torchao.dequantize_affine` calls on our quantizer's own codes and
scales, which coremltools turns into `constexpr_blockwise_shift_scale` ops: the file holds our int4/int8 codes
exactly and the scales in float16 (recorded as `quant.int4_scale_dtype` / `int8_scale_dtype`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtimes.model import Qwen3
from runtimes.quant.rtn import QuantizedTensor
from runtimes.errors import UserError

MODEL_FILE = "model.mlpackage"
SCALE_DTYPE = "float16"
DEFAULT_CHUNK = 64


@contextlib.contextmanager
def _quiet():
    """coremltools announces untested torch/scikit-learn versions and missing macOS-only proxies on import."""
    loggers = [logging.getLogger(name) for name in ("coremltools", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _coremltools():
    try:
        with _quiet():
            import coremltools as ct
    except ImportError:
        raise UserError("the Core ML target needs coremltools: pip install 'qwen-edge[coreml]'") from None
    return ct


class DequantWeight(nn.Module):
    """Our codes and fp16 scales; forward dequantizes (coremltools keeps this as a constexpr op)."""

    def __init__(self, qt: QuantizedTensor):
        super().__init__()
        if not qt.symmetric:
            raise UserError("the Core ML target takes symmetric weights only; drop --asymmetric")
        self.register_buffer("q", qt.q.to(torch.int8).contiguous())
        # float16 values (the precision the file keeps them in) held as float32 so the traced graph stays float32
        self.register_buffer("scales", qt.scales.to(torch.float16).float().contiguous())
        self.block = [1, qt.group_size]
        self.qmin, self.qmax = -(2 ** (qt.bits - 1)), 2 ** (qt.bits - 1) - 1

    def forward(self) -> torch.Tensor:
        return torch.ops.torchao.dequantize_affine(self.q, self.block, self.scales, None, torch.int8, self.qmin,
                                                   self.qmax, torch.float32)


class Weight(nn.Module):
    def __init__(self, tensor: torch.Tensor):
        super().__init__()
        self.register_buffer("w", tensor.detach().float().contiguous())

    def forward(self) -> torch.Tensor:
        return self.w


def _weight(module: Qwen3, name: str, quantized: dict[str, QuantizedTensor]) -> nn.Module:
    return DequantWeight(quantized[name]) if name in quantized else Weight(module.get_parameter(name))


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (weight.float() * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))).to(x.dtype)


class StatefulQwen3(nn.Module):
    """The edge module in the Core ML formulation (see the module docstring). Traced in float32 with a float16
    cache; coremltools' FLOAT16 compute precision makes the program fp16 (norms and softmax it keeps in fp32)."""

    def __init__(self, module: Qwen3, quantized: dict[str, QuantizedTensor], max_seq_len: int):
        super().__init__()
        a = module.args
        self.layers, self.heads, self.kv_heads, self.head_dim = (a.num_hidden_layers, a.num_attention_heads,
                                                                  a.num_key_value_heads, a.head_dim)
        self.eps = a.rms_norm_eps
        self.weights = nn.ModuleDict()
        names = [n for n, _ in module.named_parameters() if n.endswith("proj.weight")]
        for name in names:
            self.weights[name.replace(".", "_")] = _weight(module, name, quantized)
        self.embed = _weight(module, "embed_tokens.weight", quantized)
        head = "lm_head.weight" if "lm_head.weight" in quantized or not a.tie_word_embeddings else "embed_tokens.weight"
        self.head = self.embed if head == "embed_tokens.weight" else _weight(module, head, quantized)
        for n, p in module.named_parameters():
            if "norm" in n:
                self.register_buffer(n.replace(".", "_"), p.detach().float().clone())
        cos, sin = module.rope_cos[:max_seq_len], module.rope_sin[:max_seq_len]
        self.register_buffer("rope_cos", cos.float().clone())
        self.register_buffer("rope_sin", sin.float().clone())
        shape = (self.layers, self.kv_heads, max_seq_len, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=torch.float16))

    def _w(self, name: str) -> torch.Tensor:
        return self.weights[name.replace(".", "_")]()

    def _norm(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "_"))

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2  # a Python int: coremltools cannot cast a traced shape expression here
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[-1]
        end = causal_mask.shape[-1]
        start = end - seq_len
        cos = self.rope_cos[start:end][None, None]
        sin = self.rope_sin[start:end][None, None]
        groups = self.heads // self.kv_heads
        x = F.embedding(input_ids.long(), self.embed())
        for i in range(self.layers):
            p = f"layers.{i}"
            h = _rms(x, self._norm(f"{p}.input_layernorm.weight"), self.eps)
            q = F.linear(h, self._w(f"{p}.self_attn.q_proj.weight")).view(1, -1, self.heads, self.head_dim)
            k = F.linear(h, self._w(f"{p}.self_attn.k_proj.weight")).view(1, -1, self.kv_heads, self.head_dim)
            v = F.linear(h, self._w(f"{p}.self_attn.v_proj.weight")).view(1, -1, self.kv_heads, self.head_dim)
            q = _rms(q, self._norm(f"{p}.self_attn.q_norm.weight"), self.eps).transpose(1, 2)
            k = _rms(k, self._norm(f"{p}.self_attn.k_norm.weight"), self.eps).transpose(1, 2)
            v = v.transpose(1, 2)
            q = q * cos + self._rotate(q) * sin
            k = k * cos + self._rotate(k) * sin
            self.k_cache[i:i + 1, :, start:end, :] = k.to(torch.float16)
            self.v_cache[i:i + 1, :, start:end, :] = v.to(torch.float16)
            keys = self.k_cache[i:i + 1, :, :end, :].float().repeat_interleave(groups, dim=1)
            values = self.v_cache[i:i + 1, :, :end, :].float().repeat_interleave(groups, dim=1)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=causal_mask)
            x = x + F.linear(attn.transpose(1, 2).reshape(1, -1, self.heads * self.head_dim),
                             self._w(f"{p}.self_attn.o_proj.weight"))
            h = _rms(x, self._norm(f"{p}.post_attention_layernorm.weight"), self.eps)
            gate = F.linear(h, self._w(f"{p}.mlp.gate_proj.weight"))
            up = F.linear(h, self._w(f"{p}.mlp.up_proj.weight"))
            x = x + F.linear(F.silu(gate) * up, self._w(f"{p}.mlp.down_proj.weight"))
        return F.linear(_rms(x, self._norm("norm.weight"), self.eps), self.head())


def convert(module: Qwen3, quantized: dict[str, QuantizedTensor], max_seq_len: int, chunk: int = DEFAULT_CHUNK):
    """→ the coremltools MLModel (not compiled: Core ML compilation and prediction need macOS)."""
    ct = _coremltools()
    with _quiet():
        import torchao.quantization.quant_primitives  # noqa: F401  (registers torchao::dequantize_affine)
    program = StatefulQwen3(module, quantized, max_seq_len).eval()
    args = module.args
    example = (torch.zeros(1, 2, dtype=torch.int32), torch.zeros(1, 1, 2, 3))  # values do not matter to the trace
    state_shape = (args.num_hidden_layers, args.num_key_value_heads, max_seq_len, args.head_dim)
    seq = ct.RangeDim(1, chunk, default=2)
    context = ct.RangeDim(1, max_seq_len, default=3)
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(program, example, check_trace=False)
        return ct.convert(
            traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
            compute_precision=ct.precision.FLOAT16, skip_model_load=True,
            inputs=[ct.TensorType("input_ids", shape=(1, seq), dtype=np.int32),
                    ct.TensorType("causal_mask", shape=(1, 1, seq, context), dtype=np.float16)],
            outputs=[ct.TensorType("logits", dtype=np.float16)],
            states=[ct.StateType(wrapped_type=ct.TensorType(shape=state_shape, dtype=np.float16), name=name)
                    for name in ("k_cache", "v_cache")])


def export_coreml(module: Qwen3, quantized: dict[str, QuantizedTensor], out_dir: Path, max_seq_len: int,
                  chunk: int = DEFAULT_CHUNK) -> list[dict]:
    model = convert(module, quantized, max_seq_len, chunk)
    with _quiet():
        model.save(str(out_dir / MODEL_FILE))
    make_deterministic(out_dir / MODEL_FILE)
    return [entry_point(module.args, max_seq_len, chunk)]


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


def entry_point(args, max_seq_len: int, chunk: int) -> dict:
    cache = [args.num_hidden_layers, args.num_key_value_heads, max_seq_len, args.head_dim]
    return {"name": "forward", "file": MODEL_FILE,
            "inputs": [{"name": "input_ids", "dtype": "int32", "shape": [1, f"seq_len<={chunk}"]},
                       {"name": "causal_mask", "dtype": "float16", "shape": [1, 1, f"seq_len<={chunk}",
                                                                            f"context<={max_seq_len}"]}],
            "outputs": [{"name": "logits", "dtype": "float16", "shape": [1, "seq_len", args.vocab_size]}],
            "states": [{"name": "k_cache", "dtype": "float16", "shape": cache},
                       {"name": "v_cache", "dtype": "float16", "shape": cache}]}
