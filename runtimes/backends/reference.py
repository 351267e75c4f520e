"""The reference backend: the project's own Qwen3 module (runtimes.model) in PyTorch, fp32 by default."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from runtimes.errors import UserError
from runtimes.quant.recipe import load_module


class ReferenceBackend:
    name = "reference"

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.max_seq_len = module.max_seq_len
        self.vocab_size = module.args.vocab_size
        self.position = 0

    @classmethod
    def from_model(cls, model: str, max_seq_len: int = 1024, dtype: torch.dtype = torch.float32):
        """A checkpoint directory, hub id, 'tiny' or quantized checkpoint (its fake-quant module)."""
        module, _ = load_module(model, max_seq_len=max_seq_len, dtype=dtype)
        return cls(module)

    def _check_room(self, n: int) -> None:
        if self.position + n > self.max_seq_len:
            raise UserError(f"{self.position + n} positions exceed the context of {self.max_seq_len}; "
                            "shorten the prompt or raise --max-seq-len")

    @torch.inference_mode()
    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Logits of the last position, or of every position with all_logits=True ([T, vocab])."""
        if len(token_ids) == 0:
            raise UserError("cannot prefill an empty prompt")
        self._check_room(len(token_ids))
        logits = self.module.prefill(torch.tensor(list(token_ids)), self.position)[0]
        self.position += len(token_ids)
        logits = logits.float().numpy()
        return logits if all_logits else logits[-1]

    @torch.inference_mode()
    def decode(self, token_id: int) -> np.ndarray:
        self._check_room(1)
        logits = self.module.decode(int(token_id), self.position)
        self.position += 1
        return logits.float().numpy()

    def reset(self) -> None:
        self.position = 0
