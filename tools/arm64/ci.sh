#!/usr/bin/env bash
# CI's aarch64 step: bundles of the tiny model (ONNX fp32, int8, int4; ExecuTorch 8da4w, the int8 x int4 XNNPACK
# kernels, with our int8 cache kernels (runtimes/kernels/, the default) and with ExecuTorch's float cache;
# ExecuTorch's fp32 export is left to docs/benchmarks.md's run, its lowering costs minutes) exported here, then
# `verify` on each under QEMU's aarch64 CPU models neoverse-n1 (dotprod) and cortex-a72 (no dotprod): ONNX bundles in
# the arm64 root's Python with PyPI's aarch64 onnxruntime, ExecuTorch bundles through et_runner cross-compiled
# against the aarch64 executorch wheel's runtime libraries. Fails when verify fails on any bundle or CPU model.
# Needs root (apt-get for the tools, unshare for the CPU list QEMU shows); run from the project's venv.
# The root and the runner are cached in .cache/arm64 (or $QWEN_EDGE_ARM64_CACHE) and rebuilt only when their inputs
# change.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cache="${QWEN_EDGE_ARM64_CACHE:-$PWD/.cache/arm64}"
root="$(PYTHON=python tools/arm64/build_root.sh "$cache" | tail -1)"
et="$root/opt/qwen-edge/executorch"
runner="$cache/bin/et_runner"
runner_stamp="$(cat tools/et_runner/et_runner.cpp tools/et_runner/build.sh runtimes/kernels/kv8_attention.cpp \
  "$et/.stamp" | sha256sum | cut -c1-16)"
if [ ! -x "$runner" ] || [ "$(cat "$runner.stamp" 2>/dev/null)" != "$runner_stamp" ]; then
  tools/et_runner/build.sh "$cache/bin" "$et/executorch" >/dev/null
  echo "$runner_stamp" > "$runner.stamp"
fi
built=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bundles=()
for quant in fp32 int8 int4; do
  python -m exporter --model tiny --target onnx --quant "$quant" --out "$work/onnx-$quant" >/dev/null
  bundles+=(--bundle "$work/onnx-$quant")
done
python -m exporter --model tiny --target executorch --quant 8da4w --max-seq-len 256 --out "$work/executorch-8da4w" \
  >/dev/null  # the default: our int8 cache kernels
bundles+=(--bundle "$work/executorch-8da4w")
python -m exporter --model tiny --target executorch --quant 8da4w --kv-cache float32 --max-seq-len 256 \
  --out "$work/executorch-8da4w-f32" >/dev/null
bundles+=(--bundle "$work/executorch-8da4w-f32")
exported=$(date +%s)
python -m tools.arm64.check --root "$root" --runner "$runner" "${bundles[@]}" --work "$work/check"
end=$(date +%s)
echo "aarch64 step: $((end - start)) s (root and runner $((built - start)) s, exports $((exported - built)) s," \
  "verify under QEMU $((end - exported)) s)"
