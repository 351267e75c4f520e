"""The onnxruntime backend: runs a bundle's model.onnx, keeping the KV cache as ONNX Runtime values.

CPU profile: one max_seq_len buffer per cache, bound through IO binding as both the past input and the present
output, so GroupQueryAttention updates it in place and the cache never moves between steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.errors import UserError

# ONNX Runtime session settings every CPU-graph run uses (and genai_config.json passes on to ORT-GenAI): workers
# spin between kernels (ORT's default; with spinning off each of a step's ~500 kernels waits for its workers to
# wake: two-thread decode of the 0.6B shape fell from 109 to 96 tok/s), and ORT's DQ+MatMul fusion keeps fp32
# activations (accuracy level 0) so a --activations float graph computes what its fake-quant reference does
SESSION_CONFIG = {"session.intra_op.allow_spinning": "1", "session.qdq_matmulnbits_accuracy_level": "0"}


def _session(model_path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("this bundle runs on ONNX Runtime, which is not installed; pip install 'qwen-edge[onnxruntime]'") from None
    options = ort.SessionOptions()
    # decode is latency-bound on phones and laptops alike: one thread per physical core
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    try:
        return ort, ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types for missing, truncated or foreign files
        reason = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"ONNX Runtime cannot load {model_path} ({reason}); export the bundle again") from None


class OnnxRuntimeBackend:
    """The CPU profile: one dynamic graph, past/present KV kept as OrtValues."""
    name = "onnxruntime"

    def __init__(self, model_path: Path, manifest: dict, threads: int | None = None):
        self.ort, self.session = _session(model_path, threads)
        arch = manifest["architecture"]
        self.layers, self.kv_heads, self.head_dim = arch["num_hidden_layers"], arch["num_key_value_heads"], arch["head_dim"]
        self.kv_dtype = np.dtype(manifest["kv_cache"]["dtype"])
        self.max_seq_len = manifest["max_seq_len"]
        self.position = 0
        self.past: list = []
        self.reset()

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int | None = None):
        if manifest.get("profile") == "npu":
            return StaticOnnxBackend(bundle, manifest, threads)
        return cls(bundle / manifest["entry_points"][0]["file"], manifest, threads)

    def reset(self) -> None:
        """One fixed buffer per cache, max_seq_len long, bound as both past and present: GroupQueryAttention
        writes each step's keys and values into it in place, and entries past the position are never read."""
        if not self.past:
            shape = (1, self.kv_heads, self.max_seq_len, self.head_dim)
            self.past = [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=self.kv_dtype))
                         for _ in range(2 * self.layers)]
        self.position = 0

    def _run(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.arange(self.position, self.position + n, dtype=np.int64)[None])
        for i in range(self.layers):
            binding.bind_ortvalue_input(f"past_key_{i}", self.past[2 * i])
            binding.bind_ortvalue_input(f"past_value_{i}", self.past[2 * i + 1])
        binding.bind_output("logits")
        for i in range(self.layers):
            binding.bind_ortvalue_output(f"present_key_{i}", self.past[2 * i])
            binding.bind_ortvalue_output(f"present_value_{i}", self.past[2 * i + 1])
        self.session.run_with_iobinding(binding)
        self.position += n
        return binding.get_outputs()[0].numpy()[0].astype(np.float32, copy=False)

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        if len(token_ids) == 0:
            raise UserError("cannot prefill an empty prompt")
        logits = self._run(list(token_ids))
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._run([int(token_id)])[-1]


class StaticOnnxBackend:
    """The NPU profile on ONNX Runtime: static prefill (fixed chunk, padded) and decode graphs, with the
    fixed-size KV cache held here and the graphs' new K/V written into it, as an NPU host would."""
    name = "onnxruntime"

    def __init__(self, bundle: Path, manifest: dict, threads: int | None = None):
        entries = {e["name"]: e for e in manifest["entry_points"]}
        _, self.prefill_session = _session(bundle / entries["prefill"]["file"], threads)
        _, self.decode_session = _session(bundle / entries["decode"]["file"], threads)
        self.chunk = entries["prefill"]["inputs"][0]["shape"][1]
        arch = manifest["architecture"]
        self.layers = arch["num_hidden_layers"]
        self.max_seq_len = manifest["max_seq_len"]
        shape = (1, arch["num_key_value_heads"], self.max_seq_len, arch["head_dim"])
        self.cache = {f"past_{kind}_{i}": np.zeros(shape, np.dtype(manifest["kv_cache"]["dtype"]))
                      for i in range(self.layers) for kind in ("key", "value")}
        self.position = 0

    def reset(self) -> None:
        self.position = 0  # stale entries sit past the position and are masked

    def _run(self, session, token_ids: list[int], width: int) -> np.ndarray:
        n = len(token_ids)
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")
        positions = np.minimum(np.arange(self.position, self.position + width), self.max_seq_len - 1)
        feed = {"input_ids": np.asarray([token_ids + [0] * (width - n)], dtype=np.int64),
                "position_ids": positions[None].astype(np.int64), **self.cache}
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, feed)))
        for i in range(self.layers):
            for kind in ("key", "value"):
                self.cache[f"past_{kind}_{i}"][:, :, self.position:self.position + n] = outputs[f"new_{kind}_{i}"][:, :, :n]
        self.position += n
        return outputs["logits"][0, :n]

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        token_ids = list(token_ids)
        if not token_ids:
            raise UserError("cannot prefill an empty prompt")
        rows = [self._run(self.prefill_session, token_ids[i:i + self.chunk], self.chunk)
                for i in range(0, len(token_ids), self.chunk)]
        logits = np.concatenate(rows)
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._run(self.decode_session, [int(token_id)], 1)[-1]
