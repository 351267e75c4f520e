"""The executorch backend: runs a bundle's model.pte through ExecuTorch's Python runtime.

The KV cache lives inside the program (mutable buffers written in place), so a step passes only the new
tokens and the position of the first; `reset` just rewinds the position (entries past it are never attended:
the program's attention is causal from its start position).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.backends import prefill_last_position
from runtimes.backends.executorch_kernels import load_kv8_kernels
from runtimes.backends.executorch_runner import RUNNER_ENV, ExecuTorchRunnerBackend
from runtimes.errors import UserError
from runtimes.quiet import c_stderr_hidden


def load_kernels() -> None:
    """Register the kernels our programs call beyond ExecuTorch's portable ones, with torch (export) and with the
    runtime (loading): the LLM ops (llama::update_cache, llama::custom_sdpa) and the quantized kernels
    (quantized_decomposed::embedding_byte / embedding_4bit). An app's ExecuTorch build must link the same:
    its LLM custom-ops and quantized-kernels libraries, with XNNPACK."""
    try:
        with c_stderr_hidden(python_too=True):  # cpuinfo's notes on this CPU, written by C code
            import torch  # noqa: F401  (the pybindings need libtorch loaded first)
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
            import executorch.kernels.quantized  # noqa: F401
    except ImportError as exc:
        raise UserError(f"ExecuTorch is not installed here ({exc}); pip install 'qwen-edge[executorch]'") from None


def _runtime():
    load_kernels()
    with c_stderr_hidden(python_too=True):  # the pybindings log through Python's stderr as well
        from executorch.extension.pybindings import portable_lib

    return portable_lib


def _check_profile(manifest: dict) -> None:
    if manifest.get("profile") not in (None, "xnnpack"):
        raise UserError(f"this bundle is delegated to {manifest['profile']}, which runs on the device (Core ML on "
                        "Apple hardware, QNN on Snapdragon), not in ExecuTorch's Python runtime or runner here")


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, pte_path: Path, manifest: dict, threads: int | None = None):
        import torch

        self.torch = torch
        _check_profile(manifest)
        lib = _runtime()
        # nothing in an int8-cache program runs on libtorch's OpenMP workers, which the Python runtime loads (a
        # phone's runtime does not): with more than one they spin beside ExecuTorch's own pool and take its cores (a
        # 128-token decode of the 0.6B shape ran 55 tok/s with them, 75 without, on 2 cores). So its calls run with
        # one torch thread, and the process's count is restored after each: a torch model beside the bundle (parity's
        # reference, an export's fixture) keeps its threads and its numbers
        self.one_torch_thread = manifest.get("kv_cache", {}).get("dtype") == "int8"
        if self.one_torch_thread:  # the int8 cache runs on our kernels
            load_kv8_kernels()
        if threads:
            with c_stderr_hidden(python_too=True):
                lib._unsafe_reset_threadpool(threads)
        try:
            with c_stderr_hidden(python_too=True):
                self.module = lib._load_for_executorch(str(pte_path))
        except Exception as exc:  # truncated or foreign files fail inside the C++ loader
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ExecuTorch cannot load {pte_path} ({reason}); export the bundle again") from None
        self.max_seq_len = manifest["max_seq_len"]
        self.vocab_size = manifest["architecture"]["vocab_size"]
        self.position = 0
        self.started = False
        holds = self._program_context()
        if holds is not None and holds < self.max_seq_len:
            raise UserError(f"{pte_path} holds a context of {holds} positions, and its manifest claims max_seq_len "
                            f"{self.max_seq_len}; export the bundle again")

    def _program_context(self) -> int | None:
        """The context the program was built for (its get_max_seq_len method, as ExecuTorch's LLM runner reads
        it); None for a program without that method."""
        try:
            with c_stderr_hidden(python_too=True):
                return int(self.module.run_method("get_max_seq_len", ())[0])
        except Exception:
            return None

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int | None = None):
        """ExecuTorch's Python runtime, or the native runner that $QWEN_EDGE_EXECUTORCH_RUNNER names."""
        if os.environ.get(RUNNER_ENV):
            _check_profile(manifest)
            return ExecuTorchRunnerBackend.from_bundle(bundle, manifest, os.environ[RUNNER_ENV])
        return cls(bundle / manifest["entry_points"][0]["file"], manifest, threads)

    def reset(self) -> None:
        self.position = 0

    def _forward(self, token_ids: list[int]) -> np.ndarray:
        if self.position + len(token_ids) > self.max_seq_len:
            raise UserError(f"{self.position + len(token_ids)} positions exceed the bundle's context of "
                            f"{self.max_seq_len}; shorten the prompt or export with a larger --max-seq-len")
        tokens = self.torch.tensor([token_ids], dtype=self.torch.long)
        inputs = (tokens, self.torch.tensor([self.position], dtype=self.torch.long))
        threads = self.torch.get_num_threads() if self.one_torch_thread else None
        if threads:
            self.torch.set_num_threads(1)
        try:
            if self.started:
                logits = self.module.forward(inputs)[0]
            else:  # the first call starts ExecuTorch's threadpool, which logs cpuinfo's view of this CPU
                with c_stderr_hidden(python_too=True):
                    logits = self.module.forward(inputs)[0]
                self.started = True
            out = logits[0].float().numpy()
        finally:
            if threads:
                self.torch.set_num_threads(threads)
        self.position += len(token_ids)
        return out

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        return prefill_last_position(self._forward, token_ids, all_logits)

    def decode(self, token_id: int) -> np.ndarray:
        return self._forward([int(token_id)])
