"""Choosing the next token from logits: greedy, or seeded sampling with the usual filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtimes.errors import UserError
from runtimes.files import read_json

GENERATION_CONFIG = "generation_config.json"


@dataclass(frozen=True)
class Range:
    """The values a sampling number may take: low..high (either end open), and `zero` besides where 0 turns the
    filter off or means greedy. The bounds keep the arithmetic finite: logits / temperature and logits / penalty
    stay far inside a double for any float32 logit, so a subnormal or absurd value cannot make NaN probabilities."""
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    zero: str | None = None  # what 0 means, where it is allowed outside low..high

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if value == 0 and self.zero:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low = f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        high = f"below {self.high:g}" if self.high_open else f"at most {self.high:g}"
        return f"{low} and {high}" + (f", or 0 ({self.zero})" if self.zero else "")


# the one table of what each sampling number may be: SamplingParams (flags, defaults) and generation_config.json
# (verify, chat) are both checked against it
RANGES = {"temperature": Range(1e-3, 100, zero="greedy"), "top_p": Range(0, 1, low_open=True),
          "min_p": Range(0, 1, high_open=True), "repetition_penalty": Range(1e-2, 100),
          "presence_penalty": Range(-2, 2)}


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"--{name.replace('_', '-')} must be a finite number {allowed}, not {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise UserError(f"--top-k must be a whole number >= 0 (0 turns it off), not {self.top_k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2 ** 64):
            raise UserError(f"--seed must be a whole number from 0 to 2**64 - 1, not {self.seed!r}")

    @classmethod
    def from_generation_config(cls, config: dict, thinking: bool) -> "SamplingParams":
        """(`config` as read_generation_config checked it.)"""
        """The checkpoint's `generation_config.json`; greedy where it does not ask to sample.

        Qwen3 ships its thinking-mode defaults there (temperature 0.6, top_p 0.95, top_k 20); its
        recommended non-thinking defaults (0.7, 0.8, 20) are used when thinking is off.
        """
        if not config.get("do_sample"):  # (read_generation_config checked every value's type and range)
            return cls()
        if not thinking:
            return cls(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)
        return cls(temperature=config.get("temperature") or 1.0, top_p=config.get("top_p") or 1.0,
                   top_k=config.get("top_k") or 0, min_p=config.get("min_p") or 0.0,
                   repetition_penalty=config.get("repetition_penalty") or 1.0)


def _check_generation_config(config, where: Path) -> dict:
    """The fields of a generation_config.json that sampling reads, checked for type and range."""
    fix = "fix or delete it (sampling then defaults to greedy)"
    if not isinstance(config, dict):
        raise UserError(f"{where} is not a JSON object; {fix}")
    for key, allowed in RANGES.items():
        value = config.get(key)
        if value is not None and value not in allowed:
            raise UserError(f"{where}: {key} is {value!r}; it must be a number {allowed}; {fix}")
    for key in ("top_k", "max_new_tokens", "max_length"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UserError(f"{where}: {key} is {value!r}; it must be a whole number >= 0; {fix}")
    if not isinstance(config.get("do_sample", False), bool):
        raise UserError(f"{where}: do_sample is {config['do_sample']!r}; it must be true or false; {fix}")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise UserError(f"{where}: {key} is {value!r}; it must be a token id, a list of them, or null; {fix}")
    return config


def read_generation_config(directory: Path) -> dict:
    """A checkpoint's or bundle's generation_config.json, checked (empty when there is none)."""
    path = Path(directory) / GENERATION_CONFIG
    if not path.exists() and not path.is_symlink():
        return {}
    return _check_generation_config(read_json(path, "fix or delete it (sampling then defaults to greedy)"), path)


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int]) -> int:
        p = self.params
        logits = logits.astype(np.float64)
        if history and (p.repetition_penalty != 1.0 or p.presence_penalty):
            seen = np.unique(np.asarray(history))
            values = logits[seen]
            if p.repetition_penalty != 1.0:
                values = np.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
            logits[seen] = values - p.presence_penalty
        if p.temperature == 0:
            return int(logits.argmax())
        logits = logits / p.temperature
        if p.top_k:
            kth = np.partition(logits, -min(p.top_k, logits.size))[-min(p.top_k, logits.size)]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if p.min_p:
            probs[probs < p.min_p * probs.max()] = 0.0
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            cut = np.searchsorted(cumulative, p.top_p) + 1  # keep the smallest set reaching top_p
            probs[order[cut:]] = 0.0
        probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))
