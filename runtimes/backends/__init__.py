"""Backends: one small file each, all behind the same protocol.

    backend.prefill(token_ids) -> logits of the last position (float32 [vocab])
    backend.decode(token_id)   -> logits of that position
    backend.reset()            -> forget the KV cache
    backend.position           -> how many positions the cache holds
    backend.max_seq_len        -> the context the backend was built for
    backend.vocab_size         -> the embedding's rows: every id fed must be below it

Generation, sampling, chat template and the thinking budget live above this, once.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from runtimes.errors import UserError


class Backend(Protocol):
    name: str
    position: int
    max_seq_len: int
    vocab_size: int

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray: ...

    def decode(self, token_id: int) -> np.ndarray: ...

    def reset(self) -> None: ...


def prefill_last_position(forward, token_ids: Sequence[int], all_logits: bool) -> np.ndarray:
    """Prefill through a program that returns only the last position's logits (ExecuTorch's programs, as its LLM
    runner expects; ONNX CPU graphs, whose LM head runs on the last row only): `forward(ids)` → those logits;
    all_logits ([T, vocab]) runs the prompt one token per call."""
    token_ids = [int(t) for t in token_ids]
    if not token_ids:
        raise UserError("cannot prefill an empty prompt")
    if all_logits:
        return np.stack([forward([t]) for t in token_ids])
    return forward(token_ids)
