#!/usr/bin/env bash
# Builds et_runner against an executorch wheel's runtime libraries and headers (no torch, no CMake):
#   tools/et_runner/build.sh OUT            this host's, from the installed executorch package
#   tools/et_runner/build.sh OUT WHEEL_DIR  cross-compiled for aarch64 with Debian's g++-aarch64-linux-gnu, against
#                                           an unpacked aarch64 wheel's executorch/ (tools/arm64/build_root.sh)
# The binary finds the libraries through its rpath (the wheel's lib/). It carries qwen-edge's own kernels for the int8
# KV cache (runtimes/kernels/kv8_attention.cpp), compiled with fused multiply-adds (and, for this host, its vector
# units). Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"
kernels="$here/../../runtimes/kernels/kv8_attention.cpp"
if [ $# -ge 2 ]; then
  et="$2"; cxx=aarch64-linux-gnu-g++; arch=()  # armv8-a: NEON, which every aarch64 CPU has
else
  et="$(${PYTHON:-python3} -c 'import importlib.util as u
print(u.find_spec("executorch").submodule_search_locations[0])')"
  cxx=${CXX:-g++}; arch=(-march=native)
fi
mkdir -p "$out"
# the compile definitions and include directories are the wheel's own (share/cmake/executorch-config.cmake);
# --no-as-needed keeps every library: backends and kernels register themselves when loaded, nothing calls them
"$cxx" -std=c++17 -O3 "${arch[@]}" -ffp-contract=fast -Wno-deprecated-declarations -DC10_USING_CUSTOM_GENERATED_MACROS \
  -DET_EVENT_TRACER_ENABLED -I"$et/include" -I"$et/include/executorch/runtime/core/portable_type/c10" \
  "$here/et_runner.cpp" "$kernels" -o "$out/et_runner.partial" -L"$et/lib" \
  -Wl,--no-as-needed -lexecutorch -lexecutorch_backend_xnnpack -lexecutorch_kernels_optimized \
  -lexecutorch_kernels_quantized -lexecutorch_threadpool -Wl,--as-needed -Wl,-rpath,"$et/lib"
mv "$out/et_runner.partial" "$out/et_runner"
echo "$out/et_runner"
