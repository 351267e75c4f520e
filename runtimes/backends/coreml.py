"""The coreml backend: runs a bundle's stateful model.mlpackage with coremltools' prediction API and an MLState
holding the KV cache. Core ML prediction exists only on macOS (15+ for stateful models); elsewhere loading a
Core ML bundle raises a clear error, and `validate_bundle` checks what can be checked without predicting.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.errors import UserError

COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")


def _coremltools():
    try:
        import logging
        import warnings

        logging.getLogger("coremltools").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise UserError("this bundle runs on Core ML through coremltools: pip install 'qwen-edge[coreml]'") from None
    return ct


class CoreMLBackend:
    name = "coreml"

    def __init__(self, bundle: Path, manifest: dict, compute_units: str = "all", threads: int | None = None):
        if sys.platform != "darwin":
            raise UserError(f"Core ML prediction needs macOS 15 or newer (this is {platform.system()}); run this "
                            "bundle on a Mac or an iPhone (ios-demo/), or check it here with the Linux-side "
                            "validation (tests/test_coreml.py)")
        if compute_units not in COMPUTE_UNITS:
            raise UserError(f"compute units must be one of {', '.join(COMPUTE_UNITS)}")
        ct = _coremltools()
        entry = manifest["entry_points"][0]
        self.chunk = int(str(entry["inputs"][0]["shape"][1]).split("<=")[-1])
        self.max_seq_len = manifest["max_seq_len"]
        try:
            self.model = ct.models.MLModel(str(bundle / entry["file"]),
                                           compute_units=getattr(ct.ComputeUnit, compute_units.upper()))
        except Exception as exc:
            raise UserError(f"Core ML cannot load {bundle / entry['file']} ({exc}); export the bundle again") from None
        self.state = self.model.make_state()
        self.position = 0

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int | None = None, compute_units: str = "all"):
        return cls(bundle, manifest, compute_units, threads)

    def reset(self) -> None:
        self.state = self.model.make_state()
        self.position = 0

    def _call(self, token_ids: list[int]) -> np.ndarray:
        n = len(token_ids)
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")
        out = self.model.predict({"input_ids": np.asarray([token_ids], dtype=np.int32),
                                  "causal_mask": causal_mask(self.position, n)}, state=self.state)
        self.position += n
        return np.asarray(out["logits"], dtype=np.float32)[0]

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        token_ids = [int(t) for t in token_ids]
        if not token_ids:
            raise UserError("cannot prefill an empty prompt")
        rows = [self._call(token_ids[i:i + self.chunk]) for i in range(0, len(token_ids), self.chunk)]
        logits = np.concatenate(rows)
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._call([int(token_id)])[-1]


def causal_mask(start: int, seq_len: int) -> np.ndarray:
    """[1, 1, seq_len, start + seq_len] float16: 0 where a query may attend (keys up to its own position)."""
    end = start + seq_len
    allowed = np.arange(end)[None, :] <= (start + np.arange(seq_len))[:, None]
    return np.where(allowed, 0.0, -np.inf).astype(np.float16)[None, None]


def validate_bundle(bundle: str | Path, manifest: dict) -> dict:
    """What can be checked without Core ML prediction: the spec loads; its inputs, outputs and states have the
    manifest's names, shapes and dtypes; the MIL program re-validates. → {"problems": [...], "ops": {...},
    "quantized": [(codes, scales) of each constexpr_blockwise_shift_scale]}."""
    ct = _coremltools()
    from collections import Counter

    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    entry = manifest["entry_points"][0]
    path = Path(bundle) / entry["file"]
    problems = []
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    described = {
        "inputs": {f.name: f for f in spec.description.input},
        "outputs": {f.name: f for f in spec.description.output},
        "states": {f.name: f for f in spec.description.state},
    }
    dtype_names = {65568: "float32", 65552: "float16", 131104: "int32"}
    for kind in ("inputs", "outputs", "states"):
        want = {t["name"]: t for t in entry.get(kind, [])}
        if set(want) != set(described[kind]):
            problems.append(f"{kind}: model has {sorted(described[kind])}, manifest says {sorted(want)}")
            continue
        for name, tensor in want.items():
            feature = described[kind][name]
            array = feature.type.stateType.arrayType if kind == "states" else feature.type.multiArrayType
            dtype = dtype_names.get(array.dataType, str(array.dataType))
            if dtype != tensor["dtype"]:
                problems.append(f"{kind} {name}: dtype {dtype}, manifest says {tensor['dtype']}")
            fixed = [d for d in tensor["shape"] if isinstance(d, int)]
            if kind == "states" and list(array.shape) != fixed:
                problems.append(f"state {name}: shape {list(array.shape)}, manifest says {tensor['shape']}")
            if kind == "inputs":
                ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
                for dim, (declared, (low, high)) in enumerate(zip(tensor["shape"], ranges)):
                    limit = int(declared.split("<=")[-1]) if isinstance(declared, str) else declared
                    if (isinstance(declared, int) and low != high) or high != limit:
                        problems.append(f"input {name} dim {dim}: range [{low}, {high}], manifest says {declared}")
    program = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    try:
        program.validate()
    except Exception as exc:
        problems.append(f"MIL program does not validate: {exc}")
    ops = list(program.functions["main"].operations)
    quantized = [(op.data.val, op.scale.val) for op in ops if op.op_type == "constexpr_blockwise_shift_scale"]
    return {"problems": problems, "ops": dict(Counter(op.op_type for op in ops)), "quantized": quantized,
            "spec_version": spec.specificationVersion}
