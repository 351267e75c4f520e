#!/usr/bin/env bash
# Builds (or reuses) a Debian bookworm arm64 root for running bundles on aarch64 kernels under QEMU user mode:
#   ROOT/        the root: debootstrap's first stage (--foreign), then every downloaded package unpacked natively
#                with dpkg-deb -x (seconds; debootstrap's emulated second stage takes about 22 minutes and configures
#                nothing Python needs), with python3 (3.11) and a fake sys/devices/system/cpu (0-1, nothing else)
#   ROOT/opt/qwen-edge/deps   PyPI's aarch64 wheels of the project's base install plus onnxruntime, pinned by
#                constraints.txt (pip install --target, never run under emulation)
#   ROOT/opt/qwen-edge/executorch   the aarch64 executorch wheel, unpacked (its runtime libraries and headers)
# Usage: tools/arm64/build_root.sh [CACHE_DIR]   (default: .cache/arm64 in the repository, or $QWEN_EDGE_ARM64_CACHE)
# Needs root for apt-get and debootstrap; installs debootstrap, qemu-user-static and the aarch64 cross compiler
# when they are missing. Prints the root's path last.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${1:-${QWEN_EDGE_ARM64_CACHE:-$repo/.cache/arm64}}"
root="$cache/root"
python="${PYTHON:-python3}"
mkdir -p "$cache"

need=()
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# 1. the Debian root: first stage only, then every package it fetched unpacked here (the stamp names what is in it)
root_stamp="bookworm arm64 minbase python3 v1"
ours() {  # a folder this script made (it never removes anything else)
  [ ! -e "$1" ] || [ -f "$1/.qwen-edge-root" ] || [ -f "$1/.qwen-edge-partial" ] \
    || { echo "error: $1 exists and was not made by $0; choose another cache folder" >&2; exit 2; }
}
if [ "$(cat "$root/.qwen-edge-root" 2>/dev/null)" != "$root_stamp" ]; then
  ours "$root"; ours "$root.partial"
  rm -rf "$root.partial"
  mkdir -p "$root.partial" && touch "$root.partial/.qwen-edge-partial"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm "$root.partial" \
    >"$cache/debootstrap.log" 2>&1 \
    || { echo "error: debootstrap's first stage failed; see $cache/debootstrap.log" >&2; exit 2; }
  for deb in "$root.partial"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root.partial"; done
  # cpuinfo (in onnxruntime and XNNPACK) reads the CPU list and topology from /sys; QEMU passes the host's through,
  # and the aarch64 cpuinfo segfaults on it. tools/arm64/check.py bind-mounts this folder, the list alone, over
  # /sys/devices/system/cpu in a private mount namespace (QEMU's -L adds files but cannot hide the host's).
  mkdir -p "$root.partial/sys/devices/system/cpu"
  for f in possible present online; do echo 0-1 > "$root.partial/sys/devices/system/cpu/$f"; done
  echo "$root_stamp" > "$root.partial/.qwen-edge-root"
  rm -f "$root.partial/.qwen-edge-partial"
  rm -rf "$root"; mv "$root.partial" "$root"
fi

# 2. PyPI's aarch64 wheels for the base install and onnxruntime, at constraints.txt's pins
deps="$root/opt/qwen-edge/deps"
deps_stamp="$(cat "$repo/constraints.txt" "$repo/pyproject.toml" | sha256sum | cut -c1-16)"
pip_arm64=(--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
           --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all:)
if [ "$(cat "$deps/.stamp" 2>/dev/null)" != "$deps_stamp" ]; then
  rm -rf "$deps" "$cache/wheel"
  "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$cache/wheel" "$repo" >/dev/null
  wheel="$(ls "$cache"/wheel/qwen_edge-*.whl)"
  # the project's own metadata says what the base install needs (no torch); the project itself is not kept here
  # (the check puts the tree under test first on PYTHONPATH)
  "$python" -m pip install -q --target "$deps.partial" "${pip_arm64[@]}" -c "$repo/constraints.txt" \
    "$wheel[onnxruntime]"
  rm -rf "$deps.partial"/qwen_edge-*.dist-info "$deps.partial"/{runtimes,exporter,calibration}
  echo "$deps_stamp" > "$deps.partial/.stamp"
  mv "$deps.partial" "$deps"
fi

# 3. the aarch64 executorch wheel, unpacked: runtime libraries and headers only (its Python side needs torch)
et="$root/opt/qwen-edge/executorch"
et_pin="$(grep -E '^executorch==' "$repo/constraints.txt" | cut -d= -f3)"
if [ "$(cat "$et/.stamp" 2>/dev/null)" != "$et_pin" ]; then
  rm -rf "$et" "$cache/et-wheel"
  "$python" -m pip download -q --no-deps "${pip_arm64[@]}" -d "$cache/et-wheel" "executorch==$et_pin"
  mkdir -p "$et.partial"
  "$python" -m zipfile -e "$cache"/et-wheel/executorch-*.whl "$et.partial"
  echo "$et_pin" > "$et.partial/.stamp"
  mv "$et.partial" "$et"
fi
echo "$root"
