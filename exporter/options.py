"""What an export or a quantization was asked to do, as frozen data: built once from the command line (or by a
caller), checked by the targets, read by every step. No torch, so the CLI builds it before it needs torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantOptions:
    """How weights are quantized: the flags export and quantize share."""
    name: str | None = None  # --quant; None: int4, or a quantized checkpoint's own recipe
    group_size: int | None = None  # None: the largest of 128, 64, 32 that divides every linear's input width
    symmetric: bool = True
    embedding: str = "auto"  # int8, int4, none, or auto (see exporter.quantize.default_embedding)
    calib: str = "builtin"  # AWQ's and the int8 KV cache's calibration text
    samples: int = 128  # AWQ calibration windows
    seq_len: int = 512  # tokens per window
    device: str = "cpu"  # where AWQ's searches run


@dataclass(frozen=True)
class ExportOptions:
    """One export: the model, where its bundle goes, and every option a target may read. A target reads the
    options it takes and refuses, when it is the only target, the options of others (exporter/targets/)."""
    model: str
    target: str  # a name in exporter.targets.registry.TARGETS, or ALL
    out: str
    quant: QuantOptions = QuantOptions()
    max_seq_len: int | None = None  # None until export resolves the default against the model's limit
    profile: str = "cpu"
    npu_chunk: int = 32
    delegate: str = "xnnpack"
    activations: str | None = None
    kv_cache: str = "auto"
    qnn_socs: tuple[str, ...] | None = None
    overwrite: bool = False
    progress: bool = True
