"""Latency of a backend, one protocol for ours and the peers: fixed prompt ids, greedy new tokens one at a time.

TTFT = prompt in → first new token out; decode tokens/s = (N − 1) / time from first to last new token;
one warm-up, then `runs` runs, medians with [min, max].
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def spread(values: list[float]) -> dict:
    """The protocol's summary of repeated runs: median with [min, max]."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def one_run(backend, prompt: list[int], new_tokens: int) -> dict:
    backend.reset()
    state = {}

    def first_token():
        state["token"] = int(backend.prefill(prompt).argmax())

    def next_token():
        state["token"] = int(backend.decode(state["token"]).argmax())

    return timed(first_token, next_token, len(prompt), new_tokens)


def timed(first_token, next_token, prompt_len: int, new_tokens: int) -> dict:
    """The protocol's clock around any runtime: first_token() consumes the prompt and yields one token,
    next_token() one more greedy token."""
    start = time.perf_counter()
    first_token()
    first = time.perf_counter()
    per_token = []
    for _ in range(new_tokens - 1):
        t = time.perf_counter()
        next_token()
        per_token.append(time.perf_counter() - t)
    end = time.perf_counter()
    return {"ttft_ms": 1000 * (first - start), "prefill_tokens_per_s": prompt_len / (first - start),
            "decode_tokens_per_s": (new_tokens - 1) / (end - first),
            "per_token_ms_p50": 1000 * float(np.percentile(per_token, 50)),
            "per_token_ms_p95": 1000 * float(np.percentile(per_token, 95))}
