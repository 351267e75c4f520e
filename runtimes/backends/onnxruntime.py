"""The onnxruntime backend: runs a bundle's model.onnx, keeping the KV cache as ONNX Runtime values.

CPU profile: one max_seq_len buffer per cache, bound through IO binding as both the past input and the present
output, so GroupQueryAttention updates it in place and the cache never moves between steps. NPU profile
(NpuBackend): the static graphs on the CPU provider, with the host's work done here; on Qualcomm's HTP it is the
qnn backend's (runtimes/backends/qnn.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.backends import prefill_last_position
from runtimes.backends.qnn import Htp, default_provider
from runtimes.errors import UserError
from runtimes.rope import rope_tables, yarn_from_manifest

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
        self.vocab = self.vocab_size = arch["vocab_size"]
        self.position = 0
        self.past: list = []
        # graphs exported before the LM head was pruned return every position's logits
        self.every_position = self.session.get_outputs()[0].shape[1] != 1
        self.reset()
        self._check_capacity(model_path)

    def _check_capacity(self, model_path: Path) -> None:
        """The graph's RoPE tables must hold the manifest's max_seq_len (a manifest edited and signed again could
        claim more): one token run at the last position says so, before a long prompt finds out."""
        quiet = self.ort.RunOptions()
        quiet.log_severity_level = 4  # the failure is reported below, in one line; not by ORT's logger too
        try:
            self._run_at([0], self.max_seq_len - 1, quiet)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = text.split("Status Message:")[-1].strip()[:200]
            raise UserError(f"{model_path} does not run at position {self.max_seq_len - 1}, inside the manifest's "
                            f"max_seq_len of {self.max_seq_len} ({reason}); the manifest claims more context than "
                            "the graph holds: export the bundle again") from None

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int | None = None, **options):
        """The CPU profile's graph; an npu bundle's graphs on Qualcomm's HTP when onnxruntime-qnn is installed (the
        qnn backend; `options` are its soc and use_context), else on the CPU (runtimes.backends.qnn.default_provider
        says which; QWEN_EDGE_NPU_PROVIDER chooses)."""
        if manifest.get("profile") == "npu":
            if default_provider() == "qnn":
                return NpuBackend(bundle, manifest, threads, Htp(manifest, **options))
            if options:
                raise UserError(f"{', '.join(options)}: options of the qnn backend, and this npu bundle runs on the "
                                "CPU here (onnxruntime-qnn is not installed, or QWEN_EDGE_NPU_PROVIDER=cpu)")
            return NpuBackend(bundle, manifest, threads)
        return cls(bundle / manifest["entry_points"][0]["file"], manifest, threads)

    def reset(self) -> None:
        """One fixed buffer per cache, max_seq_len long, bound as both past and present: GroupQueryAttention
        writes each step's keys and values into it in place, and entries past the position are never read. The
        binding is made once: a call rebinds only its token ids, positions and logits."""
        if not self.past:
            shape = (1, self.kv_heads, self.max_seq_len, self.head_dim)
            self.past = [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=self.kv_dtype))
                         for _ in range(2 * self.layers)]
            self.binding = self.session.io_binding()
            for i in range(self.layers):
                for j, kind in enumerate(("key", "value")):
                    self.binding.bind_ortvalue_input(f"past_{kind}_{i}", self.past[2 * i + j])
                    self.binding.bind_ortvalue_output(f"present_{kind}_{i}", self.past[2 * i + j])
            self.step_logits = self.ort.OrtValue.ortvalue_from_shape_and_type([1, 1, self.vocab], np.float32)
        self.position = 0

    def _run(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")
        out = self._run_at(token_ids, self.position)
        self.position += n
        return out

    def _run_at(self, token_ids: Sequence[int], position: int, options=None) -> np.ndarray:
        n = len(token_ids)
        binding = self.binding
        binding.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.arange(position, position + n, dtype=np.int64)[None])
        # one buffer made once; an older graph's prompt logits (up to ~1 GB) live only for their call
        rows = n if self.every_position else 1
        logits = self.step_logits if rows == 1 else self.ort.OrtValue.ortvalue_from_shape_and_type(
            [1, rows, self.vocab], np.float32)
        binding.bind_ortvalue_output("logits", logits)
        self.session.run_with_iobinding(binding, options)
        out = logits.numpy()[0]  # a view of the buffer, which the next step rewrites
        return out.copy() if rows == 1 else out

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        if len(token_ids) == 0:
            raise UserError("cannot prefill an empty prompt")
        if not self.every_position:
            return prefill_last_position(lambda ids: self._run(ids)[-1], token_ids, all_logits)
        logits = self._run(list(token_ids))
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._run([int(token_id)])[-1]


class NpuBackend:
    """The npu profile (exporter/targets/onnx_npu.py) on ONNX Runtime's CPU provider, doing the host's share of the
    work as a phone app would: the embedding rows (embed.onnx), the attention bias, RoPE's cos / sin for the tokens'
    positions, and the fp16 KV cache, into which each call's new keys and values are written. prefill runs a prompt
    in chunks of the prefill graph's fixed width (the last one padded); decode runs the one-token graph. The qnn
    backend places the same prefill and decode graphs on Qualcomm's HTP: pass its `htp`
    (runtimes.backends.qnn.Htp), and this backend's name is "qnn"."""

    def __init__(self, bundle: Path, manifest: dict, threads: int | None = None, htp=None):
        entries = {e["name"]: e for e in manifest["entry_points"]}
        if "embed" not in entries or "npu" not in manifest:
            raise UserError(f"{bundle} is an npu bundle of an earlier layout (no embed.onnx); export it again")
        self.htp = htp
        self.name = "qnn" if htp else "onnxruntime"
        _, self.embed_session = _session(bundle / entries["embed"]["file"], threads)
        self.sessions = {}
        for name in ("prefill", "decode"):
            self.sessions[name] = (htp.session(bundle, entries[name]) if htp
                                   else _session(bundle / entries[name]["file"], threads)[1])
        self.chunk = entries["prefill"]["inputs"][0]["shape"][1]
        arch = manifest["architecture"]
        self.layers, kv_heads, head_dim = arch["num_hidden_layers"], arch["num_key_value_heads"], arch["head_dim"]
        self.max_seq_len = L = manifest["max_seq_len"]
        self.vocab_size = arch["vocab_size"]
        self.mask_value = np.float16(manifest["npu"]["mask_value"])
        self.cos, self.sin = (t.astype(np.float16) for t in rope_tables(head_dim, L, arch["rope_theta"],
                                                                         yarn_from_manifest(arch)))
        self.keys = [np.zeros((1, kv_heads, head_dim, L), np.float16) for _ in range(self.layers)]
        self.values = [np.zeros((1, kv_heads, L, head_dim), np.float16) for _ in range(self.layers)]
        self.position = 0

    def describe(self) -> dict:
        """What ran the graphs, for reports (the qnn backend: provider, SoC, simulated or not, QNN versions)."""
        return self.htp.describe() if self.htp else {"execution_provider": "CPUExecutionProvider"}

    def reset(self) -> None:
        self.position = 0  # stale cache entries sit past the position, where the bias masks them

    def _bias(self, width: int) -> np.ndarray:
        """[1, 1, width, L + width]: query s sees the cache's slots below the position and this call's tokens up to
        s (padding rows see the same; their outputs are dropped)."""
        L = self.max_seq_len
        bias = np.full((1, 1, width, L + width), self.mask_value, np.float16)
        bias[..., :self.position] = 0
        bias[0, 0, :, L:][np.tril(np.ones((width, width), dtype=bool))] = 0
        return bias

    def _check_room(self, n: int) -> None:
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")

    def _run(self, session, token_ids: list[int], width: int) -> np.ndarray:
        n = len(token_ids)
        embeds = self.embed_session.run(None, {"input_ids": np.asarray([token_ids], dtype=np.int64)})[0]
        if n < width:
            embeds = np.concatenate([embeds, np.zeros((1, width - n, embeds.shape[2]), np.float16)], axis=1)
        positions = np.minimum(np.arange(self.position, self.position + width), self.max_seq_len - 1)
        feed = {"inputs_embeds": embeds, "attention_bias": self._bias(width),
                "rope_cos": self.cos[positions][None, None], "rope_sin": self.sin[positions][None, None]}
        for i in range(self.layers):
            feed[f"past_key_{i}"], feed[f"past_value_{i}"] = self.keys[i], self.values[i]
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        p = self.position
        for i in range(self.layers):
            self.keys[i][..., p:p + n] = outputs[f"new_key_{i}"][..., :n]
            self.values[i][:, :, p:p + n] = outputs[f"new_value_{i}"][:, :, :n]
        self.position += n
        return outputs["logits"][0, :n].astype(np.float32)

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        token_ids = [int(t) for t in token_ids]
        if not token_ids:
            raise UserError("cannot prefill an empty prompt")
        self._check_room(len(token_ids))  # before any chunk runs: a refused prompt leaves the cache as it was
        rows = [self._run(self.sessions["prefill"], token_ids[i:i + self.chunk], self.chunk)
                for i in range(0, len(token_ids), self.chunk)]
        logits = np.concatenate(rows)
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        self._check_room(1)
        return self._run(self.sessions["decode"], [int(token_id)], 1)[-1]
