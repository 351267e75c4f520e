"""RoPE's scaling as a checkpoint's config asks for it: none (default) or YaRN (Peng et al. 2023, "YaRN: Efficient
Context Window Extension of Large Language Models"), torch-free, shared by the module (runtimes/model.py) and the
backends that build RoPE tables on the host (the npu profile).

YaRN keeps the fast-rotating frequencies (many turns within the original context) as they are, divides the slow ones
(under one turn) by `factor`, and blends linearly between, by each frequency's turns within
original_max_position_embeddings: beta_fast turns and more keep it, beta_slow turns and fewer divide it. cos and sin
are then multiplied by the attention factor (0.1 ln(factor) + 1 unless the config gives one), which scales every
query-key product, as transformers applies it. Qwen3 reaches 131,072 positions with factor 4 over 32,768.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from runtimes.errors import UserError

ROPE_TYPES = ("default", "yarn")


@dataclass(frozen=True)
class Yarn:
    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float = 1.0  # resolved from the config (see yarn_from_config)
    truncate: bool = True  # round the blend's bounds outwards to whole dimensions, as transformers does by default

    @property
    def context(self) -> int:
        """The positions the scaled model is meant for."""
        return int(self.factor * self.original_max_position_embeddings)

    def extrapolation_weights(self, head_dim: int, theta: float) -> list[float]:
        """Per frequency (head_dim / 2 of them): 1 keeps the original frequency, 0 divides it by factor."""
        def dimension(turns: float) -> float:  # the (fractional) dimension index that turns `turns` times
            return head_dim * math.log(self.original_max_position_embeddings / (turns * 2 * math.pi)) / \
                (2 * math.log(theta))

        low, high = dimension(self.beta_fast), dimension(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, head_dim - 1)
        if low == high:
            high += 0.001  # one step instead of a division by zero
        return [1.0 - min(max((i - low) / (high - low), 0.0), 1.0) for i in range(head_dim // 2)]

    def manifest(self) -> dict:
        return {"rope_type": "yarn", **asdict(self)}


def rope_dict(config: dict) -> dict:
    """The config's RoPE parameters: `rope_scaling`, or transformers 5's `rope_parameters` (which also holds
    rope_theta); `{}` when neither is set."""
    return config.get("rope_scaling") or config.get("rope_parameters") or {}


def yarn_from_config(config: dict, where="config.json") -> Yarn | None:
    """None for default RoPE, the YaRN parameters for `rope_type: yarn`; anything else is one clear error."""
    rope = rope_dict(config)
    if not isinstance(rope, dict):
        raise UserError(f"{where}: rope_scaling must be an object or null")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type in ("default", None):
        return None
    if rope_type != "yarn":
        raise UserError(f"{where} uses RoPE scaling {rope_type!r}; supported are default RoPE and 'yarn' "
                        "(remove rope_scaling to export at the native context length)")

    def number(key, low, high, default=None, whole=False):
        value = default if rope.get(key) is None else rope[key]
        kind = int if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise UserError(f"{where}: rope_scaling {key} is {value!r}; YaRN needs a {'whole ' if whole else ''}"
                            f"number from {low:g} to {high:g}")
        return value

    # as transformers standardizes a config: a top-level original_max_position_embeddings wins, else the block's, else
    # max_position_embeddings (transformers requires the factor)
    if config.get("original_max_position_embeddings") is not None:
        rope = {**rope, "original_max_position_embeddings": config["original_max_position_embeddings"]}
    original = number("original_max_position_embeddings", 1, 1 << 24, config.get("max_position_embeddings"),
                      whole=True)
    factor = float(number("factor", 1.0, 1024.0))
    beta_fast, beta_slow = float(number("beta_fast", 1e-3, 1e4, 32.0)), float(number("beta_slow", 1e-3, 1e4, 1.0))
    if beta_slow >= beta_fast:
        raise UserError(f"{where}: rope_scaling beta_slow ({beta_slow:g}) must be below beta_fast ({beta_fast:g})")
    truncate = rope.get("truncate", True)
    if not isinstance(truncate, bool):
        raise UserError(f"{where}: rope_scaling truncate is {truncate!r}; it must be true or false")
    if rope.get("attention_factor") is not None:
        attention = float(number("attention_factor", 1e-3, 1e3))
    elif rope.get("mscale") and rope.get("mscale_all_dim"):
        attention = _mscale(factor, float(number("mscale", 1e-3, 1e3))) / \
            _mscale(factor, float(number("mscale_all_dim", 1e-3, 1e3)))
    else:
        attention = _mscale(factor)
    return Yarn(factor, original, beta_fast, beta_slow, attention, truncate)


def _mscale(factor: float, scale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * scale * math.log(factor) + 1.0


def yarn_from_manifest(architecture: dict) -> Yarn | None:
    """The manifest's record (`architecture.rope_scaling`, null for default RoPE) back into parameters."""
    record = architecture.get("rope_scaling")
    if not record:
        return None
    return Yarn(**{key: value for key, value in record.items() if key != "rope_type"})


def rope_tables(head_dim: int, positions: int, theta: float, yarn: Yarn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [positions, head_dim / 2] in float32: the first half of runtimes/model.py's rotate-half tables,
    for backends that feed RoPE to a graph from the host."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    scale = np.float32(1.0)
    if yarn is not None:
        keep = np.asarray(yarn.extrapolation_weights(head_dim, theta), dtype=np.float32)
        inv_freq = (inv_freq / np.float32(yarn.factor) * (1 - keep) + inv_freq * keep).astype(np.float32)
        scale = np.float32(yarn.attention_factor)
    angles = np.outer(np.arange(positions, dtype=np.float32), inv_freq).astype(np.float32)
    return np.cos(angles) * scale, np.sin(angles) * scale
