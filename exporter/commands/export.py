"""`python -m exporter [export]`: a checkpoint to one target's bundle, or to all three from one quantization."""

from __future__ import annotations

import argparse

from exporter.commands.common import (check_calib, memory_argument, model_argument, need_torch, out_arguments,
                                      quant_arguments, quant_options)
from exporter.options import ExportOptions
from exporter.targets.registry import option_choices, target_choices
from exporter.targets.schemes import SCHEMES
from runtimes.backends.qnn import SOCS
from runtimes.errors import UserError

SUMMARY = "export a checkpoint to one target or all (the default command)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_argument(p)
    p.add_argument("--target", choices=target_choices(),
                   help="onnx: ONNX Runtime (CPU, mobile, NPU execution providers); executorch: a .pte for XNNPACK "
                        "(or --delegate); coreml: stateful .mlpackages for iOS 18 / macOS 15 (chunks of layers with "
                        "fixed-shape prefill and decode functions, for the Neural Engine); all: the three, each in a "
                        "subdirectory of --out")
    p.add_argument("--quant", choices=tuple(SCHEMES),
                   help="fp32/fp16: unquantized (coreml: fp16 only, its KV cache states are fp16); int8: per output "
                        "channel; int4: group-wise round-to-nearest; awq-int4: activation-aware int4 (slow: its result "
                        "is cached); 8da4w: ExecuTorch's name for int4 with 8-bit dynamic activations (default: int4, "
                        "or a quantized --model's own recipe)")
    quant_arguments(p)
    p.add_argument("--max-seq-len", type=int, metavar="N",
                   help="the context the bundle holds: prompt, thinking and answer together (default: 4096, or "
                        "the model's maximum if smaller; its KV cache's size is printed)")
    p.add_argument("--profile", default="cpu", choices=option_choices("profile"),
                   help="onnx: cpu is one dynamic graph with ONNX Runtime's fused kernels; npu is static fp16 prefill "
                        "and decode graphs that Qualcomm's Hexagon NPU (HTP) runs whole through ONNX Runtime's QNN "
                        "execution provider (default: cpu)")
    p.add_argument("--npu-chunk", type=int, default=32, metavar="N",
                   help="onnx npu profile: tokens per prefill call (default: 32)")
    p.add_argument("--qnn-soc", metavar="SOC[,SOC...]",
                   help="onnx npu profile: also compile the graphs for the Hexagon NPU of these phones (8gen2, 8gen3, "
                        "8elite, or all) into ONNX Runtime EPContext models with QNN context binaries, so an app "
                        "with ONNX Runtime's QNN execution provider loads them without compiling on the phone; needs "
                        "pip install 'qwen-edge[qnn]'")
    p.add_argument("--activations", choices=("float", "int8"),
                   help="how int4 linears see their input on onnx: float (exact to the fake-quant weights) or int8 "
                        "(faster; ONNX Runtime quantizes per weight group). executorch quantized linears are always "
                        "int8 (XNNPACK's only low-bit kernels); coreml is float")
    p.add_argument("--kv-cache", default="auto", choices=option_choices("kv_cache"),
                   help="the KV cache's precision. int8 stores a quarter of float32's bytes, with static "
                        "per-channel scales measured on the --calib text (parity models its rounding): faster decode "
                        "deep into the context. onnx cpu: int8, float16 (attention then runs in float16) or float32; "
                        "auto: int8 with int8 activations (int8/int4 weights), else float32 (fp16 exports keep it in "
                        "float16). executorch: int8 runs on qwen-edge's own kernels (an app links "
                        "runtimes/kernels/kv8_attention.cpp: docs/executorch.md), auto picks it for int8/int4 "
                        "weights on xnnpack; float32 keeps ExecuTorch's stock cache ops, which its prebuilt Android "
                        "library carries (default: auto)")
    p.add_argument("--delegate", default="xnnpack", choices=option_choices("delegate"),
                   help="executorch: xnnpack (every phone's CPU), coreml (Apple's Neural Engine), qnn (Qualcomm NPUs; "
                        "needs the QNN SDK) (default: xnnpack)")
    out_arguments(p, "the bundle directory (with --target all, one subdirectory per target)")
    memory_argument(p)


def parse_socs(value: str | None) -> list[str] | None:
    """--qnn-soc 8gen3,8elite → ['8gen3', '8elite']; all → every SoC the npu profile compiles for."""
    if value is None:
        return None
    socs = list(SOCS) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    if not socs or any(s not in SOCS for s in socs):
        raise UserError(f"--qnn-soc {value}: choose from {', '.join(SOCS)} or all (comma-separated)")
    return list(dict.fromkeys(socs))


def options_from(args) -> ExportOptions:
    socs = parse_socs(args.qnn_soc)
    return ExportOptions(model=args.model, target=args.target, out=args.out, quant=quant_options(args, args.quant),
                         max_seq_len=args.max_seq_len, profile=args.profile, npu_chunk=args.npu_chunk,
                         delegate=args.delegate, activations=args.activations, kv_cache=args.kv_cache,
                         qnn_socs=tuple(socs) if socs else None, overwrite=args.overwrite)


def run(args) -> int:
    need_torch("exporting")
    # --target/--out are checked here, not by argparse, so that a mistyped flag is the error reported first
    missing = [flag for flag, value in (("--target", args.target), ("--out", args.out)) if value is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} required, e.g. python -m exporter --model tiny --target onnx "
                        "--quant int4 --out dist/tiny-onnx")
    check_calib(args.calib)
    from exporter.export import export  # torch

    summary = export(options_from(args))
    print(f"wrote {summary['target']} {summary['quant']} bundle ({summary['bytes'] / 1e6:.1f} MB) to "
          f"{summary['out']} in {summary['seconds']:.1f}s")
    caches = [f"{c['target']} {c['bytes'] / 1e6:.1f} MB ({c['dtype']})" for c in summary["kv_cache"]]
    print(f"KV cache at {summary['kv_cache'][0]['positions']} positions: {', '.join(caches)}")
    for digest in summary["manifest_sha256"]:  # to pin in an app: it proves the manifest is the one exported
        print(f"manifest sha256: {digest}")
    return 0
