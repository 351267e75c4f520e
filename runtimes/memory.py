"""The memory a model needs as a whole, checked before anything is allocated.

A model or bundle needs its weights, its KV cache at the context asked for, and working memory for a step (a
prompt's logits and one layer's activations). Each is computed from config.json or the manifest, and their sum is
checked against what this machine has available (Linux MemAvailable), or against `--memory-limit` where the user
sets one: a larger limit runs what the estimate would refuse, `--memory-limit none` skips the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import UserError

FLAG = "--memory-limit"
# a prompt of up to this many tokens is covered by the working-memory estimate: the reference backend prefills a
# prompt whole (its logits are [tokens, vocab]); longer prompts need proportionally more
WORKING_PROMPT = 2048
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

_setting: str | None = None  # --memory-limit as given (None: not given)
_limit: int | None = None  # bytes from --memory-limit; None: what the system reports
_checked = True  # False: --memory-limit none


def parse_limit(text: str) -> int | None:
    """'8G', '512M', '1.5GiB', '1000000' (bytes) → bytes; 'none' → None (no check)."""
    if text.strip().lower() == "none":
        return None
    match = SIZE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{FLAG} {text!r}: give a size such as 8G or 512M (or none to skip the memory check)")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def configure(limit: str | None) -> None:
    """What the command line's --memory-limit says (None: not given): once per command, before anything loads."""
    global _setting, _limit, _checked
    _setting, _limit, _checked = limit, None, True
    if limit is not None:
        _limit = parse_limit(limit)
        _checked = _limit is not None


def setting() -> str | None:
    """--memory-limit as configured, for a child process to configure the same."""
    return _setting


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class MemoryNeed:
    weights: int
    kv_cache: int
    working: int
    positions: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working

    def describe(self) -> str:
        return (f"{size_text(self.total)} (weights {size_text(self.weights)}, KV cache at {self.positions} positions "
                f"{size_text(self.kv_cache)}, working memory {size_text(self.working)})")


def size_text(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def parameter_count(arch: dict) -> int:
    """The weights of a Qwen3 model with these numbers (config.json's, or the manifest's architecture)."""
    hidden, layers = arch["hidden_size"], arch["num_hidden_layers"]
    heads, kv_heads = arch["num_attention_heads"], arch["num_key_value_heads"]
    head_dim = arch.get("head_dim") or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads) + 2 * head_dim
    mlp = 3 * hidden * arch["intermediate_size"]
    tables = arch["vocab_size"] * hidden * (1 if arch.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp + 2 * hidden) + tables + hidden


def working_bytes(arch: dict, positions: int) -> int:
    """float32 logits of a prompt of up to WORKING_PROMPT tokens, one layer's activations and attention scores."""
    tokens = min(positions, WORKING_PROMPT)
    heads = arch["num_attention_heads"]
    head_dim = arch.get("head_dim") or arch["hidden_size"] // heads
    per_token = arch["vocab_size"] + 4 * arch["hidden_size"] + 3 * arch["intermediate_size"] + 4 * heads * head_dim
    return 4 * (tokens * per_token + heads * tokens * tokens)


def kv_cache_bytes(arch: dict, positions: int, bytes_per_value: int) -> int:
    head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
    return 2 * arch["num_hidden_layers"] * arch["num_key_value_heads"] * positions * head_dim * bytes_per_value


def model_need(arch: dict, positions: int, bytes_per_value: int = 4, streamed: bool = False) -> MemoryNeed:
    """A checkpoint's module in memory: weights and KV cache in `bytes_per_value` (float32: 4). streamed: an export
    that quantizes each linear as it reads it holds at most a byte per weight (int8 codes and scales) plus the
    largest table in float."""
    params = parameter_count(arch)
    weights = params * bytes_per_value
    if streamed:
        weights = params + arch["vocab_size"] * arch["hidden_size"] * bytes_per_value
    return MemoryNeed(weights, kv_cache_bytes(arch, positions, bytes_per_value), working_bytes(arch, positions),
                      positions)


def bundle_need(manifest: dict) -> MemoryNeed:
    """A bundle on its backend: its files (the artifact is loaded whole), its KV cache at max_seq_len, working
    memory."""
    files = sum(entry["bytes"] for entry in manifest["files"].values())
    positions = manifest["max_seq_len"]
    return MemoryNeed(files, manifest["kv_cache"]["bytes_at_max_context"],
                      working_bytes(manifest["architecture"], positions), positions)


def check_memory(need: MemoryNeed, what: str, fix: str) -> None:
    """Refuse before allocating what does not fit: against --memory-limit where given, else the memory available."""
    if not _checked:
        return
    limit, source = (_limit, f"the {FLAG} of") if _limit is not None else (available_memory(), "the")
    if limit is None or need.total <= limit:
        return
    where = f"{source} {size_text(limit)}" + (" available here" if _limit is None else "")
    raise UserError(f"{what} needs {need.describe()}, more than {where}; {fix}, or pass {FLAG} SIZE to run it anyway")
