#!/usr/bin/env bash
# Builds ExecuTorch's Android library (AAR) from source, at the version constraints.txt pins for the exporter, with
# qwen-edge's own kernels for the int8 KV cache (runtimes/kernels/kv8_attention.cpp: qwen_edge::kv8_update.out and
# qwen_edge::kv8_sdpa.out) linked into its JNI library, and puts it at android-demo/app/libs/executorch.aar, which
# android-demo/app/build.gradle.kts then uses instead of the stock AAR from Maven (that one runs --kv-cache float32
# bundles only). For arm64-v8a, the ABI the demo ships.
#
#   ANDROID_NDK=/path/to/ndk ANDROID_HOME=/path/to/sdk android-demo/executorch/build_aar.sh
#
# Inputs: ANDROID_NDK (the NDK's directory), ANDROID_HOME (the SDK's, for Gradle), and EXECUTORCH_SRC: an ExecuTorch
# checkout at that version with its submodules; without it the tag is cloned once into the qwen-edge cache
# ($QWEN_EDGE_CACHE, else $XDG_CACHE_HOME/qwen-edge, else ~/.cache/qwen-edge). PYTHON_EXECUTABLE: the Python
# ExecuTorch's build runs its code generators with (default python3). Needs cmake >= 3.24, a JDK for Gradle, and
# network access (ExecuTorch's build downloads fbjni; Gradle its plugins and dependencies). Writes only the cache's
# clone, ExecuTorch's own build directories in its checkout (cmake-out-android-*, plus cmake-out-android-arm64-v8a/
# qwen_edge/ for the kernels' library), a temporary directory, and the AAR.
#
# How ExecuTorch takes the kernels: its extension/android/CMakeLists.txt links the static library named by the CMake
# cache variable EXECUTORCH_JNI_CUSTOM_LIBRARY whole-archive into libexecutorch.so (the kernels register themselves
# from static initializers, which nothing else references). scripts/build_android_library.sh, which builds the
# native library and the AAR, passes its own fixed CMake arguments and no extra ones; so this script configures the
# same build directory first with that variable set, and CMake keeps it in the cache when the script reconfigures.
set -euo pipefail

die() {
  echo "error: $*" >&2
  exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kernels="$root/runtimes/kernels/kv8_attention.cpp"
app_aar="$root/android-demo/app/libs/executorch.aar"
abi=arm64-v8a
api=26 # the Android platform ExecuTorch's own script builds for
version="$(sed -n 's/^executorch==\([0-9.]*\)$/\1/p' "$root/constraints.txt")"
[ -n "$version" ] || die "$root/constraints.txt pins no executorch version (a line executorch==X.Y.Z)"

# every prerequisite before anything is written, the first one missing named alone
[ -n "${ANDROID_NDK:-}" ] || die "ANDROID_NDK is not set: install the Android NDK (Android Studio's SDK Manager, or developer.android.com/ndk/downloads) and set ANDROID_NDK to its directory"
toolchain="$ANDROID_NDK/build/cmake/android.toolchain.cmake"
bin=("$ANDROID_NDK"/toolchains/llvm/prebuilt/*/bin)
cxx="${bin[0]}/aarch64-linux-android$api-clang++"
ar="${bin[0]}/llvm-ar"
{ [ -f "$toolchain" ] && [ -x "$cxx" ] && [ -x "$ar" ]; } ||
  die "ANDROID_NDK ($ANDROID_NDK) is not an Android NDK (no build/cmake/android.toolchain.cmake or toolchains/llvm/prebuilt/*/bin/aarch64-linux-android$api-clang++); point it at the NDK's directory"
[ -n "${ANDROID_HOME:-}" ] || die "ANDROID_HOME is not set: install the Android SDK (Android Studio, or the command-line tools) and set ANDROID_HOME to its directory"
[ -d "$ANDROID_HOME/platforms" ] || die "ANDROID_HOME ($ANDROID_HOME) is not an Android SDK (no platforms/); point it at the SDK's directory"
command -v cmake >/dev/null || die "cmake is not on PATH: install CMake 3.25 or newer (pip install cmake, or your package manager)"
cmake_version="$(cmake --version | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r cmake_major cmake_minor <<<"${cmake_version:-0 0}"
{ [ "$cmake_major" -gt 3 ] || { [ "$cmake_major" -eq 3 ] && [ "$cmake_minor" -ge 25 ]; }; } ||
  die "cmake on PATH is older than 3.25, which ExecuTorch's Android build needs (its CMakePresets.json is version 6): install a newer one (pip install cmake)"
command -v java >/dev/null || die "java is not on PATH: install a JDK (17) for Gradle, which builds the AAR"
python="${PYTHON_EXECUTABLE:-python3}"
command -v "$python" >/dev/null || die "$python is not a program here: install Python 3 or set PYTHON_EXECUTABLE to one with ExecuTorch's build requirements"

if [ -n "${EXECUTORCH_SRC:-}" ]; then
  src="$EXECUTORCH_SRC"
else
  command -v git >/dev/null || die "git is not on PATH: install git, or set EXECUTORCH_SRC to an ExecuTorch v$version checkout"
  cache="${QWEN_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen-edge}"
  src="$cache/executorch-v$version"
fi
if [ -e "$src" ] || [ -n "${EXECUTORCH_SRC:-}" ]; then
  [ -f "$src/scripts/build_android_library.sh" ] && [ -f "$src/extension/android/CMakeLists.txt" ] ||
    die "$src is not an ExecuTorch checkout (no scripts/build_android_library.sh): set EXECUTORCH_SRC to one, or unset it to clone v$version"
  [ "$(cat "$src/version.txt" 2>/dev/null)" = "$version" ] ||
    die "$src is ExecuTorch $(cat "$src/version.txt" 2>/dev/null || echo '(no version.txt)'), not $version as constraints.txt pins for the exporter: check out tag v$version there"
  [ -f "$src/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt" ] && [ -f "$src/third-party/flatbuffers/CMakeLists.txt" ] ||
    die "$src lacks its submodules: run git submodule update --init --recursive in it"
fi
# the operator names the kernels register, as the source writes them: EXECUTORCH_LIBRARY(namespace, "name", function)
operators=($(sed -n 's/^EXECUTORCH_LIBRARY(\([A-Za-z_0-9]*\), *"\([^"]*\)".*/\1::\2/p' "$kernels"))
[ "${#operators[@]}" -gt 0 ] || die "$kernels registers no operators (no EXECUTORCH_LIBRARY lines): is the checkout whole?"

# exit 0: the AAR's arm64 JNI library carries every operator name; 1: it does not, or it is no readable AAR
aar_has_kernels() {
  "$python" - "$1" "${operators[@]}" <<'EOF'
import sys, zipfile, zlib
try:
    with zipfile.ZipFile(sys.argv[1]) as aar:
        library = aar.read("jni/arm64-v8a/libexecutorch.so")
except (KeyError, OSError, EOFError, zlib.error, zipfile.BadZipFile):
    sys.exit(1)
sys.exit(0 if all(name.encode() in library for name in sys.argv[2:]) else 1)
EOF
}

# replaced only when it is an earlier output of this script (it carries the kernels), never an AAR of the user's
if [ -f "$app_aar" ] && ! aar_has_kernels "$app_aar"; then
  die "$app_aar exists and is not an AAR this script built (it lacks qwen-edge's kernels): move it away first"
fi

# what this run creates and has not moved into place yet, removed when it ends (nothing else is)
created=()
trap 'rm -rf ${created[@]+"${created[@]}"}' EXIT # the expansion bash 3.2 (macOS) accepts for an empty array
work="$(mktemp -d "${TMPDIR:-/tmp}/qwen-edge-aar.XXXXXX")"
created+=("$work")

if [ ! -e "$src" ]; then
  # a clone is moved into place only once whole, so an interrupted one is never taken for a checkout
  mkdir -p "$(dirname "$src")"
  clone="$src.partial.$$"
  created+=("$clone")
  git clone --depth 1 --branch "v$version" --recurse-submodules --shallow-submodules \
    https://github.com/pytorch/executorch.git "$clone"
  mv "$clone" "$src"
fi
src="$(cd "$src" && pwd)"

# the kernels, for phones: the NDK's clang at the API level of ExecuTorch's own build, the compile line
# tools/et_runner/build.sh uses against the wheel (the same headers here, from the source tree: its sources include
# <executorch/...>, so the tree is seen through a directory named executorch)
build="$src/cmake-out-android-$abi"
library="$build/qwen_edge/libqwen_edge_kernels.a"
mkdir -p "$work/include" "$build/qwen_edge"
ln -s "$src" "$work/include/executorch"
"$cxx" -std=c++17 -O3 -ffp-contract=fast -fPIC -Wno-deprecated-declarations -DC10_USING_CUSTOM_GENERATED_MACROS \
  -I"$work/include" -I"$src/runtime/core/portable_type/c10" -c "$kernels" -o "$work/kv8_attention.o"
created+=("$library.partial.$$")
"$ar" rcs "$library.partial.$$" "$work/kv8_attention.o"
mv "$library.partial.$$" "$library"

# the build directory ExecuTorch's script uses for this ABI, configured as it configures it plus our library
(cd "$src" && ANDROID_NDK="$ANDROID_NDK" cmake . --preset "android-$abi" -B"$build" -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DANDROID_PLATFORM="android-$api" -DPYTHON_EXECUTABLE="$python" -DEXECUTORCH_JNI_CUSTOM_LIBRARY="$library")
mkdir -p "$work/aar"
(cd "$src" && ANDROID_NDK="$ANDROID_NDK" ANDROID_SDK="$ANDROID_HOME" ANDROID_HOME="$ANDROID_HOME" ANDROID_ABIS="$abi" \
  BUILD_AAR_DIR="$work/aar" PYTHON_EXECUTABLE="$python" bash scripts/build_android_library.sh)

mkdir -p "$(dirname "$app_aar")"
partial="$app_aar.partial.$$"
created+=("$partial")
cp "$work/aar/executorch.aar" "$partial"
aar_has_kernels "$partial" ||
  die "the AAR ExecuTorch built lacks qwen-edge's kernels in jni/$abi/libexecutorch.so; check that $build/CMakeCache.txt sets EXECUTORCH_JNI_CUSTOM_LIBRARY to $library"
mv -f "$partial" "$app_aar"
echo "$app_aar"
