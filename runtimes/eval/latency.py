"""Latency of a backend, PEERS.md's protocol: fixed prompt ids, greedy new tokens one at a time.

TTFT = prompt in → first new token out; decode tokens/s = (N − 1) / time from first to last new token;
one warm-up, then `runs` runs, medians with [min, max].
"""

from __future__ import annotations

import statistics
import time

import numpy as np


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


def measure(backend, prompt_len: int = 128, new_tokens: int = 128, runs: int = 3, vocab: int = 1000,
            seed: int = 0) -> dict:
    prompt = np.random.default_rng(seed).integers(0, vocab, prompt_len).tolist()
    one_run(backend, prompt, new_tokens)  # warm-up
    results = [one_run(backend, prompt, new_tokens) for _ in range(runs)]
    summary = {"prompt_tokens": prompt_len, "new_tokens": new_tokens, "runs": runs}
    for key in results[0]:
        values = [r[key] for r in results]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary
