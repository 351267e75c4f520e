"""What a target is to the exporter: the `Target` protocol, what it is handed to write a bundle and what it gives
back. export.py runs the target-independent steps (options, memory, quantization, tokenizer files, manifest) and
asks the target only for what is its own; registry.py names the targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from exporter.options import ExportOptions
from exporter.targets.schemes import QuantScheme
from runtimes.errors import UserError
from runtimes.quiet import stage
from runtimes.tokenizer import QwenTokenizer

KV_CALIBRATION = (4, 256)  # --kv-cache int8: sequences × tokens (at most --seq-len) of --calib its scales come from


@dataclass(frozen=True)
class OwnOption:
    """An option of ExportOptions that only its target takes: another target, exported alone, refuses a value
    outside `neutral` with `message` ({value}: the value, {target}: the refusing target), followed by that
    target's hint for it where it has one."""
    field: str
    message: str
    neutral: tuple = ()


@dataclass(frozen=True)
class BundleRequest:
    """What a target writes from: the module (caches sized for options.max_seq_len; a quantized weight's float values
    released), QuantizedTensor per name, the scheme this target writes and its manifest fields so far, and the
    bundle directory, which already holds the tokenizer files."""
    module: Any
    weights: Mapping[str, Any]
    scheme: QuantScheme
    quant: Mapping[str, Any]
    options: ExportOptions  # max_seq_len resolved
    model_dir: Path
    into: Path


@dataclass(frozen=True)
class Artifact:
    """What a target wrote, for the manifest: entry points, the KV cache's dtype and layout, the fields it adds to
    `quant` (activations, scale dtypes) and to the top level (the onnx npu profile's "npu" and "qnn"), its profile."""
    entry_points: list[dict]
    kv_dtype: str
    kv_layout: str
    quant: dict = field(default_factory=dict)
    profile: str | None = None
    extra: dict = field(default_factory=dict)


class Target(Protocol):
    name: str  # --target, and the manifest's target
    backend: str  # the runtimes.bundle.BACKENDS entry that runs its bundles
    libraries: tuple[str, ...]  # distributions whose versions shape its bytes (the manifest's "versions")
    own_options: tuple[OwnOption, ...]  # options only this target takes
    hints: Mapping[str, str]  # option field → what to do instead, when this target refuses another's option
    choices: Mapping[str, tuple]  # option field → the values this target takes (the CLI's choices)

    def scheme_for(self, scheme: QuantScheme) -> QuantScheme:
        """The scheme this target writes for --quant `scheme` under --target all."""

    def check_options(self, options: ExportOptions, scheme: QuantScheme, alone: bool) -> None:
        """Refuse what this target cannot honour, before any slow work (alone False: --target all, where an option
        that applies to other targets only is not its concern)."""

    def check_libraries(self, options: ExportOptions) -> None:
        """Its SDK imports and takes these options: a missing one is a one-line error naming what to install."""

    def needs_int8_table(self, options: ExportOptions) -> bool:
        """Whether it needs the embedding / LM head table in int8 (--embedding auto then picks int8)."""

    def stores_float16(self, options: ExportOptions) -> bool:
        """Whether its bundle keeps weights or scales in float16 whatever the scheme (fp16 schemes always do):
        export then refuses a weight past float16's range rather than write inf."""

    def symmetric_only(self, options: ExportOptions) -> str | None:
        """Who takes symmetric weights only under these options (for require_symmetric's message), or None."""

    def write(self, request: BundleRequest) -> Artifact:
        """Its own files into request.into."""


def refuse_foreign_options(target: Target, options: ExportOptions, others: list[Target]) -> None:
    """`target`, exported alone, refuses the options only `others` take."""
    for other in others:
        for own in other.own_options:
            value = getattr(options, own.field)
            if value is not None and value not in own.neutral and value not in target.choices.get(own.field, ()):
                hint = target.hints.get(own.field)
                message = own.message.format(value=value, target=target.name)
                raise UserError(f"{message}; {hint}" if hint else message)


def int8_cache_scales(r: BundleRequest, target: str):
    """An int8 KV cache's static per-channel scales [layers, 2, kv_heads, head_dim], from the keys and values of
    calibration text (runtimes/quant/kv.py says how; the onnx and executorch targets store their caches so)."""
    from calibration.datasets import calibration_set  # torch: only when writing
    from runtimes.quant.kv_calibration import calibrate

    q = r.options.quant
    with stage(f"{target}: calibrating the int8 KV cache's scales"):
        text = calibration_set(q.calib, QwenTokenizer(r.model_dir).encode, KV_CALIBRATION[0],
                               min(KV_CALIBRATION[1], q.seq_len, r.options.max_seq_len))
        return calibrate(r.module, text.tokens, r.weights)
