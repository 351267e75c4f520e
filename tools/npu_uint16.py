"""The road not taken for the npu profile: uint16 QDQ activations around every decoder linear (Qualcomm's w4a16 /
w8a16 recipe: int4 weights in the QNN EP's LPBQ pattern, int8 per channel), measured against the fp16 graphs that
exporter/targets/onnx_npu.py writes. Needs onnxruntime-qnn for --provider qnn.

    python -m tools.npu_uint16 --quant int4 --out /tmp/npu-u16 [--provider qnn|cpu] [--prompts 6]
                               [--int8-head-qdq] [--variant uint16|fp16]

Exports tiny's npu bundle, swaps its decoder linears for QDQ MatMuls (uint16 per-tensor ranges calibrated on the
builtin calibration text, run through the fp16 fake-quant reference), runs it on HTP (8 Gen 3, CPU fallback disabled)
and compares it teacher-forced with a reference that models it (LPBQ-rescaled int4 scales, every linear's input and
output rounded to its uint16 grid, fp16 elsewhere) and with the fp32 model. The LM head stays the fp16 MatMulNBits
unless --int8-head-qdq quantizes it too. --variant fp16 runs the same comparison on the product's own graphs against
their own reference, for a like-for-like table. The rewritten bundle no longer matches its manifest's hashes: it is a
measurement, not a bundle to ship.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from calibration.datasets import calibration_set
from exporter.export import export, prepare
from exporter.options import ExportOptions, QuantOptions
from exporter.targets import onnx_npu
from runtimes.backends.onnxruntime import NpuBackend
from runtimes.backends.qnn import Htp
from runtimes.backends.reference import ReferenceBackend
from runtimes.bundle import read_manifest
from runtimes.checkpoint import resolve_model_dir
from runtimes.eval.parity import CHAT_PROMPTS, logit_metrics, summarize
from runtimes.generate import prepare_prompt, run
from runtimes.quant.recipe import apply_fake_quant
from runtimes.quant.rtn import QuantizedTensor
from runtimes.reference import bundle_reference
from runtimes.tokenizer import QwenTokenizer

MAX_SEQ_LEN, CHUNK = 128, 16


def uint16_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of asymmetric uint16 covering [low, high] and 0; the scale in fp16, as stored."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float16(max(high - low, 1e-6) / 65535))
    return scale, int(np.clip(round(-low / scale), 0, 65535))


def fake_uint16(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    scale, zero = uint16_params(low, high)
    q = torch.clamp(torch.round(x.float() / scale) + zero, 0, 65535)
    return ((q - zero) * scale).to(x.dtype)


def lpbq_scales(qt: QuantizedTensor) -> tuple[np.ndarray, np.ndarray]:
    """Our group scales [out, groups] as LPBQ: an fp16 scale per channel (its largest group scale / 15) times a
    4-bit integer per group (1..15). The codes stay; the scales, so the weights, change."""
    s = qt.scales.float().numpy()
    channel = (s.max(axis=1) / 15).astype(np.float16)
    block = np.clip(np.round(s / np.maximum(channel.astype(np.float32), 1e-30)[:, None]), 1, 15).astype(np.uint8)
    return channel, block


def lpbq_dequantize(qt: QuantizedTensor) -> torch.Tensor:
    channel, block = lpbq_scales(qt)
    scales = torch.from_numpy(block.astype(np.float32) * channel.astype(np.float32)[:, None])
    return (qt.q.float().reshape(qt.shape[0], -1, qt.group_size) * scales[..., None]).reshape(qt.shape)


class Uint16Builder(onnx_npu.NpuBuilder):
    """Decoder linears as QDQ MatMuls; with int8_head_qdq the LM head too (then embed.onnx reads its own table)."""

    def __init__(self, module, quantized, max_seq_len, ranges: dict, int8_head_qdq: bool = False):
        super().__init__(module, quantized, max_seq_len)
        self.ranges, self.int8_head_qdq = ranges, int8_head_qdq

    def _qdq(self, g, x, key: str):
        scale, zero = uint16_params(*self.ranges[key])
        s, z = g.const(scale, np.float16), g.const(zero, np.uint16)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, s, z), s, z)

    def quantized_linear(self, g, x, name: str, qt: QuantizedTensor):
        out_features, in_features = qt.shape
        if qt.bits == 8:  # per channel: codes [in, out], an fp16 scale per output column
            w = g.op("DequantizeLinear", g.weight(f"{name}.qweight_t", lambda: qt.q.numpy().T),
                     g.weight(f"{name}.scales_t", lambda: qt.scales.float().numpy().reshape(-1).astype(np.float16)),
                     g.weight(f"{name}.zeros_t", lambda: np.zeros(out_features, np.int8)), axis=1)
        else:  # LPBQ: a DequantizeLinear of 4-bit block scales by the channel scale feeds the weights' blocked one
            channel, block = lpbq_scales(qt)
            block_scales = g.op("DequantizeLinear", g.weight(f"{name}.block_scales", lambda: block.T.copy()),
                                g.weight(f"{name}.channel_scales", lambda: channel),
                                g.weight(f"{name}.block_scales_zero", lambda: np.zeros(out_features, np.uint8)), axis=1)
            codes = g.weight(f"{name}.qweight_t", lambda: ir.Tensor(qt.q.numpy().T.copy(), dtype=ir.DataType.INT4))
            zeros = g.weight(f"{name}.zeros_t", lambda: ir.Tensor(
                np.zeros((in_features // qt.group_size, out_features), np.int8), dtype=ir.DataType.INT4))
            w = g.op("DequantizeLinear", codes, block_scales, zeros, axis=0, block_size=qt.group_size)
        return self._qdq(g, g.op("MatMul", self._qdq(g, x, f"{name}:in"), w), f"{name}:out")

    def lm_head(self, g, x):
        if self.int8_head_qdq and self.q.get(self.head) is not None:
            return self.quantized_linear(g, x, self.head, self.q[self.head])
        return super().lm_head(g, x)

    def build_embed(self):
        if not self.int8_head_qdq:
            return super().build_embed()
        qt, a = self.q["embed_tokens.weight"], self.a
        g = self.graph("embed")
        ids = g.input("input_ids", "int64", [1, "sequence"])
        codes = g.weight("embed_tokens.weight.codes", lambda: qt.q.numpy())
        scales = g.weight("embed_tokens.weight.row_scales",
                          lambda: qt.scales.float().numpy().reshape(-1).astype(np.float16))
        rows = g.op("Mul", g.op("Cast", g.op("Gather", codes, ids), to=ir.DataType.FLOAT),
                    g.op("Unsqueeze", g.op("Cast", g.op("Gather", scales, ids), to=ir.DataType.FLOAT), g.const([-1])))
        g.output(g.op("Cast", rows, to=ir.DataType.FLOAT16), "inputs_embeds", "float16", [1, "sequence", a.hidden_size])
        return g.model()


def linear_groups(module, with_head: bool) -> dict[str, list[str]]:
    """Weight name (as the builder names it) -> the module's Linear submodule(s) it stands for."""
    groups = {}
    for i in range(module.args.num_hidden_layers):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                     "mlp.up_proj", "mlp.down_proj"):
            groups[f"layers.{i}.{name}.weight"] = [f"layers.{i}.{name}"]
    if with_head:
        groups["embed_tokens.weight"] = ["lm_head"]
    return groups


def tiny(quant: str):
    options = QuantOptions(quant, 64, embedding="int8" if quant != "fp32" else "none", samples=16, seq_len=128)
    return prepare("tiny", options, MAX_SEQ_LEN, progress=False)[:2]


def reference_module(quant: str):
    """The fp16 fake-quant module with LPBQ-rescaled int4 weights."""
    module, weights = tiny(quant)
    apply_fake_quant(module, weights, "float", "float16", "float16")
    for name, qt in weights.items():
        if qt.bits == 4:
            module.get_parameter(name).data.copy_(lpbq_dequantize(qt))
    return module.half()


@torch.no_grad()
def calibrate(module, tokens: torch.Tensor, groups: dict) -> dict[str, tuple[float, float]]:
    """min / max of every group's input and output over the calibration windows."""
    ranges, hooks = {}, []

    def widen(key, t):
        low, high = ranges.get(key, (0.0, 0.0))
        ranges[key] = (min(low, t.min().item()), max(high, t.max().item()))

    def observe(key):
        def hook(_, args, out):
            widen(key + ":in", args[0].float())
            widen(key + ":out", out.float())
        return hook

    for fused, members in groups.items():
        for member in members:
            hooks.append(module.get_submodule(member).register_forward_hook(observe(fused)))
    for row in tokens:
        module.prefill(row, 0)
    for hook in hooks:
        hook.remove()
    return ranges


def round_activations(module, ranges: dict, groups: dict) -> None:
    for fused, members in groups.items():
        for member in members:
            sub = module.get_submodule(member)
            sub.register_forward_pre_hook(lambda _, args, k=fused: (fake_uint16(args[0], *ranges[k + ":in"]),))
            sub.register_forward_hook(lambda _, args, out, k=fused: fake_uint16(out, *ranges[k + ":out"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.npu_uint16", description=__doc__.split("\n\n")[0])
    p.add_argument("--quant", default="int4", choices=("int4", "int8"))
    p.add_argument("--out", required=True)
    p.add_argument("--provider", default="qnn", choices=("qnn", "cpu"))
    p.add_argument("--prompts", type=int, default=len(CHAT_PROMPTS))
    p.add_argument("--int8-head-qdq", action="store_true")
    p.add_argument("--variant", default="uint16", choices=("uint16", "fp16"))
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    out = Path(args.out)
    tokenizer = QwenTokenizer(resolve_model_dir("tiny"))
    export(ExportOptions("tiny", "onnx", str(out), QuantOptions(args.quant, 64), max_seq_len=MAX_SEQ_LEN, profile="npu",
                         npu_chunk=CHUNK, overwrite=True, progress=False))
    manifest = read_manifest(out)
    if args.variant == "fp16":
        reference = bundle_reference(manifest, None)[0].module
    else:
        reference = reference_module(args.quant)
        groups = linear_groups(reference, args.int8_head_qdq)
        ranges = calibrate(reference, calibration_set("builtin", tokenizer.encode, 16, MAX_SEQ_LEN).tokens, groups)
        round_activations(reference, ranges, groups)
        module, weights = tiny(args.quant)
        for f in out.glob("*.onnx*"):
            f.unlink()
        with torch.no_grad():
            onnx_npu.export_npu(module, weights, out, MAX_SEQ_LEN, CHUNK,
                                Uint16Builder(module, weights, MAX_SEQ_LEN, ranges, args.int8_head_qdq))
        (out / "uint16_ranges.json").write_text(json.dumps(ranges, indent=1))
    if args.provider == "qnn":
        backend = NpuBackend(out, manifest, htp=Htp(manifest, soc="8gen3"))
    else:
        backend = NpuBackend(out, manifest)
    fp32, ref = ReferenceBackend(tiny("fp32")[0]), ReferenceBackend(reference)
    versus_ref, versus_fp32, start = [], [], time.perf_counter()
    for text in CHAT_PROMPTS[:args.prompts]:
        messages = [{"role": "user", "content": text}]
        ours, theirs = (run(b, tokenizer, messages, budget=8, max_new_tokens=16) for b in (backend, ref))
        prompt, _ = prepare_prompt(tokenizer, messages, 8)
        sequence, split = (prompt + theirs.token_ids)[:-1], len(prompt)
        logits = {}
        for name, b in (("ours", backend), ("ref", ref), ("fp32", fp32)):
            b.reset()
            logits[name] = np.concatenate([b.prefill(sequence[:split], all_logits=True)]
                                          + [b.decode(t)[None] for t in sequence[split:]])
        versus_ref.append({"greedy_match": ours.token_ids == theirs.token_ids,
                           "teacher_forced": logit_metrics(logits["ours"], logits["ref"])})
        versus_fp32.append({"greedy_match": True, "teacher_forced": logit_metrics(logits["ours"], logits["fp32"])})
    keys = ("teacher_forced_top1_agreement", "max_abs_logit_diff", "mean_kl")
    print(json.dumps({"variant": args.variant, "quant": args.quant, "provider": args.provider,
                      "int8_head_qdq": args.int8_head_qdq,
                      "versus_reference": {k: summarize(versus_ref)[k] for k in ("greedy_token_match", *keys)},
                      "versus_fp32": {k: summarize(versus_fp32)[k] for k in keys},
                      "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
