"""The ExecuTorch target: its options, checks and libraries; executorch.py writes the .pte (imported when a bundle
is written: it needs torch, torchao and ExecuTorch)."""

from __future__ import annotations

from exporter.options import ExportOptions
from exporter.targets.schemes import QuantScheme
from exporter.targets.target import Artifact, BundleRequest, OwnOption, int8_cache_scales
from runtimes.errors import UserError
from runtimes.tokenizer import QwenTokenizer

KV_LAYOUT = "[layers] x key/value x [1, positions, kv_heads, head_dim], inside the program"
INT8_KV_LAYOUT = ("[layers] x key/value x [1, kv_heads, positions, head_dim] int8 codes x static per-channel scales "
                  "(kv_scales.npy), inside the program; qwen_edge::kv8_update / kv8_sdpa kernels")


def int8_cache_for(options: ExportOptions, scheme: QuantScheme) -> bool:
    """--kv-cache auto: the int8 cache on our kernels where the linears run int8 activations on XNNPACK (int8, int4,
    awq-int4), as the onnx cpu graph chooses: ExecuTorch's stock float32 cache ops read four times the bytes and
    decode several times slower deep into the context (docs/executorch.md). float32 where the program is exact or
    near-exact (fp32, fp16) or runs on another delegate."""
    if options.kv_cache != "auto":
        return options.kv_cache == "int8"
    return options.delegate == "xnnpack" and scheme.quantized


class ExecuTorchTarget:
    name = "executorch"
    backend = "executorch"
    libraries = ("executorch", "torchao")
    own_options = (OwnOption("delegate", "--delegate applies to --target executorch only", neutral=("xnnpack",)),)
    hints = {"profile": "for ExecuTorch NPUs choose --delegate coreml or qnn"}
    # kv_cache int8: our own kernels (runtimes/kernels/); float32 keeps ExecuTorch's stock cache ops
    choices = {"delegate": ("xnnpack", "coreml", "qnn"), "kv_cache": ("auto", "float32", "int8")}

    def scheme_for(self, scheme: QuantScheme) -> QuantScheme:
        return scheme.for_target(self.name)

    def needs_int8_table(self, options: ExportOptions) -> bool:
        return False

    def stores_float16(self, options: ExportOptions) -> bool:
        return options.delegate == "coreml"  # the Core ML delegate keeps fp16 weights and scales

    def symmetric_only(self, options: ExportOptions) -> str | None:
        return "the executorch target (XNNPACK's low-bit linears)"

    def check_options(self, options: ExportOptions, scheme: QuantScheme, alone: bool) -> None:
        if alone and options.activations == "float" and scheme.quantized:
            raise UserError("XNNPACK runs quantized linears with 8-bit dynamic activations only; drop --activations "
                            "float, or use --quant fp32/fp16 for float activations")
        if options.kv_cache == "int8" and (options.delegate != "xnnpack" or scheme.name == "fp16"):
            raise UserError("--kv-cache int8 runs on the CPU with float32 activations: use it with --delegate "
                            "xnnpack and a quant other than fp16")

    def check_libraries(self, options: ExportOptions) -> None:
        from exporter.targets.executorch import check_delegate  # torch and ExecuTorch: only when exporting

        check_delegate(options.delegate)

    def write(self, r: BundleRequest) -> Artifact:
        from exporter.targets.executorch import ACTIVATIONS, INT4_SCALE_DTYPE, Program, export_executorch

        fp16, delegate = r.scheme.name == "fp16", r.options.delegate
        int8_cache = int8_cache_for(r.options, r.scheme)
        program = Program(r.options.max_seq_len, fp16, delegate,
                          int8_cache_scales(r, self.name) if int8_cache else None)
        special = QwenTokenizer(r.into).special
        entry_points = export_executorch(r.module, r.weights, r.into, program, bos_id=special.endoftext,
                                         eos_ids=sorted(special.stop))
        fields = {}
        if delegate == "xnnpack":
            if r.weights:
                fields["activations"] = ACTIVATIONS
            if any(qt.bits == 4 for qt in r.weights.values()):
                fields["int4_scale_dtype"] = INT4_SCALE_DTYPE
        else:  # Core ML: weight-only constexpr ops with float16 scales, fp16 compute
            fields = {f"int{bits}_scale_dtype": "float16" for bits in sorted({qt.bits for qt in r.weights.values()})}
        kv_dtype, kv_layout = ("int8", INT8_KV_LAYOUT) if int8_cache else ("float16" if fp16 else "float32", KV_LAYOUT)
        return Artifact(entry_points, kv_dtype, kv_layout, fields, profile=delegate)


EXECUTORCH = ExecuTorchTarget()
