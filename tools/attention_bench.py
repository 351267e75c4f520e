"""`python -m tools.attention_bench`: one layer's attention, as each ExecuTorch cache runs it, at several positions.

Per call, in this process on ExecuTorch's kernels (through torch's operator bindings for ExecuTorch's own ops; our
qwen_edge ops inside a one-layer ExecuTorch program, as the exported model calls them): `llama::custom_sdpa` over a
float32 cache (ExecuTorch's stock op, `--kv-cache auto`), `llama::custom_quantized_sdpa` over ExecuTorch's
per-token int8 cache (its `replace_kv_cache_with_quantized_kv_cache` swap), and `qwen_edge::kv8_sdpa` with
`kv8_update` over our int8 cache (`--kv-cache int8`). Decode is one new token after `position` filled positions;
prefill is a prompt of `position` tokens from position 0. Prints a Markdown table (ms per layer, median of runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_ms(step, runs: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _kv8_program(heads: int, kv_heads: int, head_dim: int, capacity: int, work: Path):
    import torch

    from exporter.targets.executorch import int8_attention_program
    from runtimes.backends.executorch import _runtime
    from runtimes.backends.executorch_kernels import load_kv8_kernels

    path = work / "kv8_step.pte"
    int8_attention_program(torch.full((2, kv_heads, head_dim), 0.02), heads, capacity, path)
    load_kv8_kernels()
    return _runtime()._load_for_executorch(str(path))


def measure(positions: list[int], threads: int, runs: int, heads: int = 16, kv_heads: int = 8,
            head_dim: int = 128) -> list[dict]:
    import torch

    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama:: ops)
    from runtimes.backends.executorch import _runtime
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401

    torch.set_num_threads(threads)
    _runtime()._unsafe_reset_threadpool(threads)
    capacity = max(positions) + 1
    float_k, float_v = torch.randn(1, capacity, kv_heads, head_dim), torch.randn(1, capacity, kv_heads, head_dim)
    codes = lambda: torch.randint(-128, 128, (1, capacity, kv_heads, head_dim), dtype=torch.int8)  # noqa: E731
    int8_k, int8_v = codes(), codes()
    scale = lambda: torch.full((1, capacity, kv_heads, 1), 0.02)  # noqa: E731
    zero = lambda: torch.zeros((1, capacity, kv_heads, 1), dtype=torch.int8)  # noqa: E731
    k_scales, v_scales, k_zeros, v_zeros = scale(), scale(), zero(), zero()
    with tempfile.TemporaryDirectory() as work:
        kv8 = _kv8_program(heads, kv_heads, head_dim, capacity, Path(work))
        rows = []
        for mode in ("decode", "prefill"):
            for position in positions:
                steps, start = (1, position) if mode == "decode" else (position, 0)
                if start + steps > capacity:
                    continue
                q = torch.randn(1, steps, heads, head_dim)
                k, v = torch.randn(1, steps, kv_heads, head_dim), torch.randn(1, steps, kv_heads, head_dim)

                def quantized():
                    s, z = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(q, torch.int8)
                    qq = torch.ops.quantized_decomposed.quantize_per_token(q, s, z, -128, 127, torch.int8)
                    torch.ops.llama.custom_quantized_sdpa(qq, int8_k, int8_v, start, None, 0, True, None,
                                                          z.to(torch.int8), s.float(), k_zeros, k_scales, v_zeros,
                                                          v_scales)

                step_runs = runs if mode == "decode" else 1
                rows.append({
                    "mode": mode, "position": position,
                    "custom_sdpa_fp32_ms": _median_ms(
                        lambda: torch.ops.llama.custom_sdpa(q, float_k, float_v, start, None, 0.0, True), step_runs),
                    "custom_quantized_sdpa_ms": _median_ms(quantized, step_runs) if mode == "decode" else None,
                    "qwen_edge_kv8_ms": _median_ms(lambda: kv8.forward((q, k, v, torch.tensor([start]))), step_runs),
                })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.attention_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", default="128,2048,4096", metavar="N,N",
                        help="filled positions (decode) and prompt lengths (prefill) (default: 128,2048,4096)")
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="threads (default: 2)")
    parser.add_argument("--runs", type=int, default=20, metavar="N", help="decode calls timed (default: 20)")
    args = parser.parse_args(argv)
    try:
        positions = [int(p) for p in args.positions.split(",")]
    except ValueError:
        print("error: --positions takes comma-separated integers", file=sys.stderr)
        return 2
    rows = measure(positions, args.threads, args.runs)
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"| call | positions | custom_sdpa fp32 ms | custom_quantized_sdpa ms | qwen_edge kv8 ms |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['position']} | {fmt(r['custom_sdpa_fp32_ms'])} | "
              f"{fmt(r['custom_quantized_sdpa_ms'])} | {fmt(r['qwen_edge_kv8_ms'])} |")
    print(f"\nOne layer (16 query and 8 kv heads of 128), {args.threads} threads; median of {args.runs} decode calls, "
          "one prefill call each.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
