"""The executorch backend through a native runner process (tools/et_runner): a bundle's model.pte run by ExecuTorch's
C++ runtime libraries, without torch or ExecuTorch's Python bindings.

$QWEN_EDGE_EXECUTORCH_RUNNER names the runner's command line (a built et_runner, or one under an emulator:
`qemu-aarch64-static -cpu cortex-a72 -L ROOT .../et_runner`); the executorch backend uses it when set. The runner
keeps the program's KV cache; this side keeps the position and speaks et_runner's --serve protocol: "forward
IDS" → "logits N" and N float32, "reset" → "ok".
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.backends import prefill_last_position
from runtimes.errors import UserError

RUNNER_ENV = "QWEN_EDGE_EXECUTORCH_RUNNER"



class ExecuTorchRunnerBackend:
    name = "executorch"

    def __init__(self, pte_path: Path, manifest: dict, command: str):
        self.command = shlex.split(command)
        self.max_seq_len = manifest["max_seq_len"]
        self.vocab_size = manifest["architecture"]["vocab_size"]
        self.position = 0
        self.stderr = tempfile.TemporaryFile()  # read only when it fails; a pipe nobody reads could fill and block it
        try:
            self.process = subprocess.Popen([*self.command, str(pte_path), "--serve"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self.stderr)
        except OSError as exc:
            raise UserError(f"{RUNNER_ENV} names a runner that cannot start ({exc}); build it with "
                            "tools/et_runner/build.sh") from None

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, command: str, threads: int | None = None):
        return cls(bundle / manifest["entry_points"][0]["file"], manifest, command)

    def describe(self) -> dict:
        return {"runner": shlex.join(self.command)}

    def _request(self, line: str) -> bytes:
        try:
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = b""
        if not answer:
            self.process.kill()
            self.process.wait()
            self.stderr.seek(0)
            why = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
            raise UserError(f"the ExecuTorch runner stopped ({why[-1][:200] if why else 'no message'}, exit "
                            f"{self.process.returncode})")
        return answer

    def reset(self) -> None:
        self._request("reset")
        self.position = 0

    def _forward(self, token_ids: list[int]) -> np.ndarray:
        if self.position + len(token_ids) > self.max_seq_len:
            raise UserError(f"{self.position + len(token_ids)} positions exceed the bundle's context of "
                            f"{self.max_seq_len}; shorten the prompt or export with a larger --max-seq-len")
        header = self._request("forward " + ",".join(str(int(t)) for t in token_ids)).split()
        count = int(header[1])
        data = self.process.stdout.read(4 * count)
        if header[0] != b"logits" or len(data) != 4 * count:
            raise UserError("the ExecuTorch runner's answer is cut short")
        self.position += len(token_ids)
        return np.frombuffer(data, dtype="<f4").copy()

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        return prefill_last_position(self._forward, token_ids, all_logits)

    def decode(self, token_id: int) -> np.ndarray:
        return self._forward([int(token_id)])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()

    def __del__(self):
        if hasattr(self, "process"):
            self.close()
