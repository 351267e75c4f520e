"""`python -m tools.bench_gqa`: ONNX Runtime's CPU GroupQueryAttention alone, for each KV cache the ONNX CPU graph
could hold: float32, and int8 in the kernel's PER_CHANNEL and PER_TENSOR modes (exporter/targets/onnx_cpu.py uses
PER_TENSOR at scale 1 on keys and values divided by their per-channel scales).

A graph of --layers independent attention nodes of one shape (default: Qwen3-0.6B's 16 query heads, 8 KV heads,
head_dim 128), each with its own cache buffer bound as both past and present, as runtimes/backends/onnxruntime.py
binds them (--buffer positions long, as a bundle's --max-seq-len). Each mode is timed in a fresh process, `--queries` new tokens at position `--position` (1: a decode
step; the position itself: a prompt of that length), a warm-up then `--runs` calls; the median and the minimum per
node are printed. Cache contents are random: attention costs the same whatever the values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

MODES = ("float32", "int8-per-channel", "int8-per-tensor")


def build(mode: str, heads: int, kv_heads: int, head_dim: int, buffer: int, layers: int):
    from onnx import TensorProto, helper, numpy_helper

    cache = TensorProto.FLOAT if mode == "float32" else TensorProto.INT8
    io = helper.make_tensor_value_info
    exponents = np.arange(0, head_dim, 2) / head_dim
    angles = np.outer(np.arange(buffer), 1.0 / 1e6 ** exponents)
    initializers = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
                    numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]
    inputs = [io(name, TensorProto.FLOAT, [1, "S", n * head_dim])
              for name, n in (("q", heads), ("k", kv_heads), ("v", kv_heads))]
    inputs += [io("seqlens_k", TensorProto.INT32, [1]), io("total", TensorProto.INT32, [])]
    outputs, nodes = [], []
    for i in range(layers):
        inputs += [io(f"past_{kind}_{i}", cache, [1, kv_heads, buffer, head_dim]) for kind in "kv"]
        outputs += [io(f"out_{i}", TensorProto.FLOAT, None)]
        outputs += [io(f"present_{kind}_{i}", cache, None) for kind in "kv"]
        attrs, scales = {}, []
        if mode != "float32":
            kind = "PER_CHANNEL" if mode == "int8-per-channel" else "PER_TENSOR"
            shape = [1, kv_heads, 1, head_dim] if kind == "PER_CHANNEL" else [1]
            initializers.append(numpy_helper.from_array(np.full(shape, 0.02, np.float32), f"scale_{i}"))
            scales = ["", "", "", f"scale_{i}", f"scale_{i}"]
            attrs = {"k_quant_type": kind, "v_quant_type": kind, "kv_cache_bit_width": 8}
        nodes.append(helper.make_node(
            "GroupQueryAttention", ["q", "k", "v", f"past_k_{i}", f"past_v_{i}", "seqlens_k", "total", "cos", "sin",
                                    *scales], [f"out_{i}", f"present_k_{i}", f"present_v_{i}"],
            domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
            scale=float(head_dim ** -0.5), **attrs))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def time_mode(args) -> dict:
    import onnxruntime as ort

    buffer = max(args.buffer, args.position + args.queries)
    model = build(args.mode, args.heads, args.kv_heads, args.head_dim, buffer, args.layers)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    dtype = np.float32 if args.mode == "float32" else np.int8
    binding = session.io_binding()
    for name, n in (("q", args.heads), ("k", args.kv_heads), ("v", args.kv_heads)):
        binding.bind_cpu_input(name, rng.standard_normal((1, args.queries, n * args.head_dim)).astype(np.float32))
    binding.bind_cpu_input("seqlens_k", np.array([args.position + args.queries - 1], np.int32))
    binding.bind_cpu_input("total", np.array(args.position + args.queries, np.int32))
    for i in range(args.layers):
        for kind in "kv":
            values = rng.integers(-100, 100, (1, args.kv_heads, buffer, args.head_dim)).astype(dtype)
            cache = ort.OrtValue.ortvalue_from_numpy(values)
            binding.bind_ortvalue_input(f"past_{kind}_{i}", cache)
            binding.bind_ortvalue_output(f"present_{kind}_{i}", cache)
        binding.bind_output(f"out_{i}")
    # a prompt (queries > 1) writes at the start of the cache: its position is where it ends
    session.run_with_iobinding(binding)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append((time.perf_counter() - start) / args.layers * 1e3)
    return {"mode": args.mode, "median_ms": float(np.median(times)), "min_ms": float(min(times))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_gqa", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--position", type=int, default=2048, help="tokens already in the cache (default: 2048)")
    parser.add_argument("--queries", type=int, default=1, help="new tokens per call (default: 1, a decode step)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default: 2)")
    parser.add_argument("--buffer", type=int, default=0,
                        help="positions each cache buffer holds, a bundle's --max-seq-len (default: just enough)")
    parser.add_argument("--layers", type=int, default=28, help="attention nodes in the graph (default: 28)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls after a warm-up (default: 30)")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in this process
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(time_mode(args)))
        return 0
    if args.queries > 1:  # a prompt fills the cache from the start
        args.position = 0
    print(f"GroupQueryAttention, {args.heads}/{args.kv_heads} heads x {args.head_dim}, {args.queries} queries at "
          f"position {args.position}, {args.threads} threads, ms per node (median, min of {args.runs}):")
    for mode in MODES:
        command = [sys.executable, "-m", "tools.bench_gqa", "--mode", mode] + [
            f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items() if name != "mode"]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"  {mode:18s} {result['median_ms']:8.3f} {result['min_ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
