"""Finding NaN and infinite values among a bundle's stored weights without loading them as a framework would.

Each float tensor is read as raw bits, a memory map of its bytes in the file, and a value is not finite when its
exponent bits are all ones: the same test for float32, float16 and bfloat16, with no conversion. Read: ONNX
initializers (inline or in external data files), .npy arrays and .safetensors tensors. ExecuTorch programs and
Core ML weight blobs are not parsed here (their formats are the runtimes' own).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

# dtype name → (unsigned view, exponent mask)
EXPONENT = {"float32": (np.uint32, 0x7F800000), "float16": (np.uint16, 0x7C00), "bfloat16": (np.uint16, 0x7F80),
            "float64": (np.uint64, 0x7FF0000000000000)}
ONNX_FLOATS = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64"}  # TensorProto.DataType
SAFETENSORS_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
CHUNK = 1 << 24  # values per pass, so a large tensor is never converted whole


def nonfinite_count(raw: np.ndarray, dtype: str) -> int:
    """How many values of `raw` (any array over the tensor's bytes) are NaN or infinite as `dtype`."""
    view, mask = EXPONENT[dtype]
    bits = raw.reshape(-1).view(np.uint8)
    bits = bits[:bits.size - bits.size % np.dtype(view).itemsize].view(view)
    mask = view(mask)
    return sum(int(np.count_nonzero((bits[i:i + CHUNK] & mask) == mask)) for i in range(0, bits.size, CHUNK))


def _mapped(path: Path, offset: int, length: int) -> np.ndarray:
    if length <= 0:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(length,))


def onnx_nonfinite(path: Path) -> list[str]:
    """Names of the float initializers of an ONNX model that hold NaN or infinite values (needs the onnx package:
    ImportError without it)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    bad = []
    for tensor in model.graph.initializer:
        dtype = ONNX_FLOATS.get(tensor.data_type)
        if dtype is None:
            continue
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            data_path = path.parent / info["location"]
            offset = int(info.get("offset", 0))
            length = int(info.get("length", data_path.stat().st_size - offset))
            raw = _mapped(data_path, offset, length)
        elif tensor.raw_data:
            raw = np.frombuffer(tensor.raw_data, np.uint8)
        elif dtype == "float32":
            raw = np.asarray(tensor.float_data, np.float32)
        elif dtype == "float64":
            raw = np.asarray(tensor.double_data, np.float64)
        else:  # float16 / bfloat16 kept as their bits in int32_data
            raw = np.asarray(tensor.int32_data, np.uint16)
        if nonfinite_count(raw, dtype):
            bad.append(tensor.name)
    return bad


def npy_nonfinite(path: Path) -> bool:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    name = array.dtype.name
    return name in EXPONENT and nonfinite_count(np.asarray(array), name) > 0


def safetensors_nonfinite(path: Path) -> list[str]:
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    bad = []
    for name, info in header.items():
        dtype = SAFETENSORS_FLOATS.get(info.get("dtype")) if isinstance(info, dict) else None
        if dtype is None:
            continue
        start, end = info["data_offsets"]
        if nonfinite_count(_mapped(path, 8 + size + start, end - start), dtype):
            bad.append(name)
    return bad


def bundle_nonfinite(bundle: Path, files: list[str]) -> tuple[list[str], list[str]]:
    """(one line per file with NaN or infinite weights, notes on what could not be read) over a bundle's listed
    files."""
    problems, notes = [], []
    for name in sorted(files):
        path = bundle / name
        try:
            if name.endswith(".onnx"):
                try:
                    bad = onnx_nonfinite(path)
                except ImportError:
                    notes.append(f"{name}'s weights not checked for NaN/inf: the onnx package is not installed")
                    continue
            elif name.endswith(".npy"):
                bad = ["its array"] if npy_nonfinite(path) else []
            elif name.endswith(".safetensors"):
                bad = safetensors_nonfinite(path)
            else:
                continue
        except Exception as exc:  # not parseable: loading it is the backend's check (verify's run), not this one's
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            notes.append(f"{name}'s weights not checked for NaN/inf: it cannot be parsed ({reason})")
            continue
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            problems.append(f"{name}: {bad[0]}{more} holds NaN or infinite values")
    return problems, notes
