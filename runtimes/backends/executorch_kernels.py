"""Our ExecuTorch kernels (runtimes/kernels/kv8_attention.cpp: qwen_edge::kv8_update and qwen_edge::kv8_sdpa, the
int8 KV cache of int8-cache programs, the default for quantized XNNPACK exports), built for ExecuTorch's Python runtime
and registered with it.

ExecuTorch's Python bindings link the wheel's libexecutorch.so, whose kernel registry a library linked against the
same file joins when it is loaded. So the source is compiled once per (source, ExecuTorch version, machine) with the
wheel's headers and libraries, as tools/et_runner/build.sh compiles the native runner, kept under the cache
directory ($QWEN_EDGE_CACHE, else ~/.cache/qwen-edge: kernels/), and loaded with ctypes. It needs a C++17 compiler
(g++ or clang++; $CXX chooses). An app links the same source into its ExecuTorch build (docs/executorch.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

from runtimes.errors import UserError
from runtimes.files import cache_root

SOURCE = Path(__file__).resolve().parent.parent / "kernels" / "kv8_attention.cpp"
NAMESPACE = "qwen_edge"  # the operators' namespace in programs
# the names kv8_attention.cpp registers (EXECUTORCH_LIBRARY): a runtime that lacks them cannot load int8-cache programs
OPERATORS = (f"{NAMESPACE}::kv8_update.out", f"{NAMESPACE}::kv8_sdpa.out")
_loaded: dict[str, ctypes.CDLL] = {}


def executorch_dir() -> Path:
    """The installed executorch package (its include/ and lib/)."""
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("ExecuTorch is not installed here; pip install 'qwen-edge[executorch]'")
    return Path(list(spec.submodule_search_locations)[0])


def cpu_features() -> str:
    """This CPU's feature list (Linux), part of the build's key: the library is compiled for the CPU it runs on."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def compile_command(source: Path, out: Path, et: Path, cxx: str) -> list[str]:
    """The compiler line: the wheel's headers and definitions (its share/cmake config's), position-independent, for
    this CPU's vector units (-march=native: the library is built where it runs) with fused multiply-adds, linked
    against the wheel's libexecutorch and thread pool, found at run time through the rpath."""
    return [cxx, "-std=c++17", "-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared",
            "-Wno-deprecated-declarations", "-DC10_USING_CUSTOM_GENERATED_MACROS", f"-I{et / 'include'}",
            f"-I{et / 'include' / 'executorch' / 'runtime' / 'core' / 'portable_type' / 'c10'}",
            str(source), "-o", str(out), f"-L{et / 'lib'}", "-lexecutorch", "-lexecutorch_threadpool",
            f"-Wl,-rpath,{et / 'lib'}"]


def library_path() -> Path:
    """The built library for this source, ExecuTorch and machine; built now if it is not there yet."""
    et = executorch_dir()
    key = hashlib.sha256(SOURCE.read_bytes() + version("executorch").encode() + platform.machine().encode()
                         + cpu_features().encode())
    out = cache_root() / "kernels" / f"kv8_attention-{key.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    named = os.environ.get("CXX")
    cxx = shutil.which(named) if named else (shutil.which("g++") or shutil.which("clang++") or shutil.which("c++"))
    if cxx is None:
        which = f"$CXX ({named}) is not a program here" if named else "no C++ compiler (g++, clang++, c++) is here"
        raise UserError(f"this bundle's int8 KV cache runs on qwen-edge's own ExecuTorch kernels, which are compiled "
                        f"on first use, and {which}: install g++ (apt install g++) or point CXX at a compiler, or "
                        "export the bundle with --kv-cache float32")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    built = subprocess.run(compile_command(SOURCE, partial, et, cxx), capture_output=True, text=True)
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        detail = (built.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise UserError(f"compiling {SOURCE.name} with {cxx} failed ({detail}); check that the executorch package "
                        "is complete (its include/ and lib/), or export the bundle with --kv-cache float32")
    os.replace(partial, out)  # whole or absent, also when two processes build at once
    return out


def load_kv8_kernels() -> None:
    """Register qwen_edge::kv8_update / kv8_sdpa with ExecuTorch's runtime in this process (once)."""
    path = library_path()
    if str(path) not in _loaded:
        _loaded[str(path)] = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
