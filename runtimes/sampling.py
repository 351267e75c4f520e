"""Choosing the next token from logits: greedy, or seeded sampling with the usual filters, by one algorithm that the
app cores (android-demo/core Sampler.java, ios-demo Generation.swift) implement step for step, so that a seed gives
the same tokens in Python, Java and Swift (tests/golden/sampling.json pins it).

The algorithm, over the logits as float64:
1. penalties: a repetition penalty on every token of the prompt and of the generated text (a positive logit is
   divided by it, a negative one multiplied), then a presence penalty subtracted from every token generated so far
   (the prompt is not penalised);
2. temperature 0: the first index of the largest logit; no random draw;
3. else the logits divided by the temperature; the candidates ordered by value, highest first, ties by lower index;
   top_k > 0 keeps the first k;
4. softmax over the candidates (exp of each minus the largest, divided by their sum taken in candidate order);
5. min_p > 0 keeps those with probability >= min_p x the largest; top_p < 1 keeps the shortest prefix whose running
   sum reaches top_p;
6. one draw u in [0, 1) from SplitMix64 (the top 53 bits of its next output x 2**-53): the chosen token is the
   first candidate whose running sum exceeds u x the kept candidates' sum.
Sums run in candidate order in every language; the languages' exp may differ in the last bit, which changes a
decision only for a draw within ~1e-16 of a boundary (the golden cases are checked to stay clear of any).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.errors import UserError
from runtimes.files import read_json

GENERATION_CONFIG = "generation_config.json"
UINT64 = (1 << 64) - 1

# Qwen3's documented sampling per mode (its model card): thinking mode is what its generation_config.json ships;
# greedy decoding is advised against in thinking mode (endless repetition). presence_penalty 0 by default, 0-2 to
# curb repetition.
QWEN3_THINKING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
QWEN3_NON_THINKING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}


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
    seed: int | None = None  # None: a fresh random seed per Sampler

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
    def for_mode(cls, generation_config: dict, thinking: bool) -> "SamplingParams":
        """The defaults for the mode in effect, from a checked generation_config.json (`{}` when there is none).

        `do_sample: false` asks for greedy decoding (its penalties still apply). Otherwise thinking mode takes the
        config's temperature / top_p / top_k / min_p (Qwen3 ships its thinking-mode values there), each missing one
        from Qwen's documented thinking values; non-thinking mode takes Qwen's documented non-thinking values, since a
        generation config holds one set and Qwen3's is the thinking set. repetition_penalty and presence_penalty come
        from the config in both modes (1 and 0 without one).
        """
        penalties = {"repetition_penalty": float(generation_config.get("repetition_penalty") or 1.0),
                     "presence_penalty": float(generation_config.get("presence_penalty") or 0.0)}
        if generation_config.get("do_sample") is False:
            return cls(**penalties)
        if not thinking:
            return cls(**QWEN3_NON_THINKING, **penalties)
        values = {key: generation_config[key] if generation_config.get(key) is not None else default
                  for key, default in QWEN3_THINKING.items()}
        return cls(temperature=float(values["temperature"]), top_p=float(values["top_p"]), top_k=int(values["top_k"]),
                   min_p=float(values["min_p"]), **penalties)

    def with_overrides(self, **overrides) -> "SamplingParams":
        """These defaults with the values a user set (None: not set)."""
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})


class SplitMix64:
    """The portable generator: SplitMix64 (Steele, Lea and Flood 2014), the same outputs in Java and Swift."""

    def __init__(self, seed: int):
        self.state = seed & UINT64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & UINT64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & UINT64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & UINT64
        return z ^ (z >> 31)

    def next_float(self) -> float:
        """Uniform in [0, 1): the top 53 bits, exactly representable as a double."""
        return (self.next_u64() >> 11) * 2.0 ** -53


def _check_generation_config(config, where: Path) -> dict:
    """The fields of a generation_config.json that sampling reads, checked for type and range."""
    fix = "fix or delete it (sampling then takes Qwen's documented values)"
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
    return _check_generation_config(read_json(path, "fix or delete it (sampling then takes Qwen's documented values)"), path)


class Sampler:
    """The algorithm in the module's docstring; one random draw per sampled (not greedy) token."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.seed = params.seed if params.seed is not None else secrets.randbits(64)
        self.rng = SplitMix64(self.seed)

    def __call__(self, logits: np.ndarray, generated: Sequence[int], prompt: Sequence[int] = ()) -> int:
        """`generated`: every token after the prompt so far; `prompt`: the prompt's ids (repetition penalty only)."""
        logits = penalized(logits, self.params, generated, prompt)
        if self.params.temperature == 0:
            return int(logits.argmax())
        return choose(logits, self.params, self.rng.next_float())


def penalized(logits: np.ndarray, params: SamplingParams, generated: Sequence[int], prompt: Sequence[int]) -> np.ndarray:
    """Step 1: the logits as float64 with the repetition and presence penalties applied."""
    logits = np.asarray(logits).astype(np.float64).reshape(-1)
    if params.repetition_penalty != 1.0 and (len(prompt) or len(generated)):
        seen = np.unique(np.concatenate([np.asarray(prompt, dtype=np.int64), np.asarray(generated, np.int64)]))
        values = logits[seen]
        logits[seen] = np.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if params.presence_penalty and len(generated):
        logits[np.unique(np.asarray(generated, dtype=np.int64))] -= params.presence_penalty
    return logits


def choose(logits: np.ndarray, params: SamplingParams, draw: float) -> int:
    """Steps 3-6 for a temperature > 0 and a draw in [0, 1)."""
    scaled = logits / params.temperature
    order = candidates(scaled, params.top_k)
    weights = np.exp(scaled[order] - scaled[order[0]])
    probs = weights / np.cumsum(weights)[-1]
    kept = len(order)
    if params.min_p:
        kept = int(np.count_nonzero(probs >= params.min_p * probs[0]))
    running = np.cumsum(probs[:kept])
    if params.top_p < 1.0:
        kept = min(int(np.searchsorted(running, params.top_p, side="left")) + 1, kept)
    target = draw * running[kept - 1]
    return int(order[min(int(np.searchsorted(running[:kept], target, side="right")), kept - 1)])


def candidates(scaled: np.ndarray, top_k: int) -> np.ndarray:
    """Token ids by value, highest first, ties by lower id; the first top_k of them when top_k > 0."""
    if top_k and top_k < scaled.size:
        kth = np.partition(scaled, scaled.size - top_k)[scaled.size - top_k]
        above = np.flatnonzero(scaled > kth)
        ids = np.concatenate([above, np.flatnonzero(scaled == kth)[:top_k - above.size]])
        return ids[np.lexsort((ids, -scaled[ids]))]
    return np.argsort(-scaled, kind="stable")  # stable: equal values keep the lower id first
