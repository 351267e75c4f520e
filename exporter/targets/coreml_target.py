"""The Core ML target: its options, checks and libraries; coreml.py converts the .mlpackage chunks (imported when a
bundle is written: it needs torch, torchao and coremltools)."""

from __future__ import annotations

from exporter.options import ExportOptions
from exporter.targets.schemes import SCHEMES, QuantScheme
from exporter.targets.target import Artifact, BundleRequest
from runtimes.errors import UserError

KV_LAYOUT = "per chunk of layers, states k_cache, v_cache: [chunk layers, kv_heads, positions, head_dim]"


class CoreMLTarget:
    name = "coreml"
    backend = "coreml"
    libraries = ("coremltools", "torchao")
    own_options = ()
    hints = {"profile": "a Core ML bundle runs on CPU, GPU or the Neural Engine as the app chooses"}
    choices: dict[str, tuple] = {}

    def scheme_for(self, scheme: QuantScheme) -> QuantScheme:
        """Core ML keeps its KV cache in fp16 states (the only state dtype iOS 18 has), so under --target all its
        bundle of an fp32 export is fp16 (alone, --quant fp32 is refused)."""
        return SCHEMES["fp16"] if scheme.name == "fp32" else scheme.for_target(self.name)

    def needs_int8_table(self, options: ExportOptions) -> bool:
        return False

    def stores_float16(self, options: ExportOptions) -> bool:
        return True  # Core ML computes in fp16 and keeps scales in fp16

    def symmetric_only(self, options: ExportOptions) -> str | None:
        return "the coreml target"

    def check_options(self, options: ExportOptions, scheme: QuantScheme, alone: bool) -> None:
        if not alone:
            return
        if scheme.name == "fp32":
            raise UserError("--quant fp32 is not available for coreml: Core ML keeps the KV cache in states, which "
                            "are fp16 only (iOS 18); use --quant fp16 (or int8/int4 weights)")
        if options.activations == "int8":
            raise UserError("--activations int8 is not available for coreml: Core ML keeps activations in fp16")

    def check_libraries(self, options: ExportOptions) -> None:
        from exporter.targets.coreml import load_coremltools  # torch and coremltools: only when exporting

        load_coremltools()

    def write(self, r: BundleRequest) -> Artifact:
        from exporter.targets.coreml import SCALE_DTYPE, export_coreml

        entry_points = export_coreml(r.module, r.weights, r.into, r.options.max_seq_len)
        fields = {f"int{bits}_scale_dtype": SCALE_DTYPE for bits in sorted({qt.bits for qt in r.weights.values()})}
        return Artifact(entry_points, "float16", KV_LAYOUT, fields)


COREML = CoreMLTarget()
