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
            if value is not None and value not in own.neutral:
                hint = target.hints.get(own.field)
                message = own.message.format(value=value, target=target.name)
                raise UserError(f"{message}; {hint}" if hint else message)
