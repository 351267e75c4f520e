"""The ONNX target: its options, checks and libraries, and which writer its profile runs (onnx_cpu.py, one graph
on ONNX Runtime's fused CPU kernels; onnx_npu.py, static fp16 graphs Qualcomm's HTP compiles). The writers need
torch and onnx_ir and are imported when a bundle is written, so the CLI lists this target without them."""

from __future__ import annotations

import json

from exporter.options import ExportOptions
from exporter.targets.genai import GENAI_CONFIG, genai_config
from exporter.targets.schemes import QuantScheme
from exporter.targets.target import Artifact, BundleRequest, OwnOption, int8_cache_scales
from runtimes.backends.onnxruntime import SESSION_CONFIG
from runtimes.backends.qnn import available as qnn_available
from runtimes.errors import UserError
from runtimes.sampling import read_generation_config
from runtimes.tokenizer import QwenTokenizer

KV_LAYOUT = "[layers] x key/value x [1, kv_heads, positions, head_dim]"


def kv_cache_dtype(kv_cache: str, int8_activations: bool) -> str:
    """--kv-cache auto for the cpu profile: int8 where the linears run int8 activations (the fast path: the cache is
    a quarter of fp32's bytes and decode deep into the context is faster; prompts run on float attention over the
    cache's codes, see docs/onnx.md), float32 where the graph is exact or near-exact (fp32, fp16 (which stores it in
    fp16), --activations float)."""
    if kv_cache != "auto":
        return kv_cache
    return "int8" if int8_activations else "float32"


class OnnxTarget:
    name = "onnx"
    backend = "onnxruntime"
    libraries = ("onnx", "onnxruntime")
    own_options = (
        OwnOption("qnn_socs", "--qnn-soc precompiles the onnx npu profile; use it with --target onnx --profile npu"),
        OwnOption("kv_cache", "--kv-cache {value}: {target} does not store its cache so (onnx cpu: int8, float16 "
                              "or float32; executorch: int8 or float32)", neutral=("auto", "float32")),
        OwnOption("profile", "--profile is an onnx option", neutral=("cpu",)),
    )
    hints: dict[str, str] = {}
    choices = {"profile": ("cpu", "npu"), "kv_cache": ("auto", "float32", "float16", "int8")}

    def scheme_for(self, scheme: QuantScheme) -> QuantScheme:
        return scheme.for_target(self.name)

    def needs_int8_table(self, options: ExportOptions) -> bool:
        return options.profile == "npu"  # the host gathers rows of the int8 table the LM head reads

    def stores_float16(self, options: ExportOptions) -> bool:
        return options.profile == "npu"  # the npu profile's graphs compute in fp16 and keep scales in fp16

    def symmetric_only(self, options: ExportOptions) -> str | None:
        return "the onnx npu profile (HTP's MatMulNBits)" if options.profile == "npu" else None

    def check_options(self, options: ExportOptions, scheme: QuantScheme, alone: bool) -> None:
        o, quant = options, scheme.name
        if o.qnn_socs and o.profile != "npu":
            raise UserError("--qnn-soc precompiles the onnx npu profile; add --profile npu")
        if o.profile == "npu" and quant == "fp32":
            raise UserError("the NPU computes in fp16: use --quant fp16, int8, int4 or awq-int4 with --profile npu")
        if o.kv_cache not in ("auto", "float32") and o.profile != "cpu":
            raise UserError("--kv-cache applies to the onnx cpu profile (the npu profile's cache is fp16 already)")
        if o.kv_cache == "float16" and quant == "fp16":
            raise UserError("--quant fp16 keeps the KV cache in float16 already; drop --kv-cache float16")
        if o.profile == "npu" and not 1 <= o.npu_chunk <= 512:
            raise UserError("--npu-chunk must be between 1 and 512")
        if o.quant.embedding == "int4" and o.profile == "npu" and scheme.quantized:
            raise UserError("the npu profile stores the embedding / LM head as int8 per row or unquantized; "
                            "use --embedding int8 (default) or none, or --profile cpu for an int4 table")
        if o.activations == "int8" and (o.profile != "cpu" or not scheme.quantized):
            raise UserError("--activations int8 applies to the quantized linears of the onnx cpu profile (ONNX "
                            "Runtime's MatMulNBits); use it with --quant int8, int4 or awq-int4 and --profile cpu")

    def check_libraries(self, options: ExportOptions) -> None:
        try:
            import onnx  # noqa: F401  (an optional dependency: the [onnx] extra)
        except ImportError:
            raise UserError("the ONNX target needs onnx: pip install 'qwen-edge[onnx]'") from None
        if options.qnn_socs and not qnn_available():
            raise UserError("--qnn-soc compiles with Qualcomm's HTP compiler, which comes with ONNX Runtime's QNN "
                            "execution provider: pip install 'qwen-edge[qnn]'")

    def write(self, request: BundleRequest) -> Artifact:
        if request.options.profile == "npu":
            return self._write_npu(request)
        return self._write_cpu(request)

    def _write_npu(self, r: BundleRequest) -> Artifact:
        from exporter.targets.onnx_npu import KV_LAYOUT as NPU_KV_LAYOUT, export_npu_bundle  # torch, onnx_ir

        entry_points, extra, fields = export_npu_bundle(r.module, r.weights, r.into, r.options.max_seq_len,
                                                        r.options.npu_chunk, r.options.qnn_socs)
        # fp16 activations and cache, whatever the weights
        return Artifact(entry_points, "float16", NPU_KV_LAYOUT, fields, profile="npu", extra=extra)

    def _write_cpu(self, r: BundleRequest) -> Artifact:
        from exporter.targets.onnx_cpu import export_cpu  # torch, onnx_ir

        o = r.options
        # the default: int8 activations for quantized linears on CPU (MatMulNBits at accuracy level 4, the fastest
        # kernels; the reference rounds activations the same way); --activations float keeps them exact
        int8_activations = bool(r.weights) and o.activations != "float"
        kv_cache = kv_cache_dtype(o.kv_cache, int8_activations)
        kv_scales = int8_cache_scales(r, "onnx") if kv_cache == "int8" else None
        entry_points = export_cpu(r.module, r.weights, r.into, o.max_seq_len, r.scheme.name == "fp16",
                                  int8_activations, kv_cache, kv_scales)
        # ORT-GenAI, the stock ONNX LLM client, runs it unchanged
        _write_genai_config(r, entry_points[0]["file"])
        fields = {"activations": "int8-dynamic-per-block"} if int8_activations else {}
        return Artifact(entry_points, entry_points[0]["inputs"][-1]["dtype"], KV_LAYOUT, fields, profile="cpu")


def _write_genai_config(r: BundleRequest, model_file: str) -> None:
    config = genai_config(r.module.args, r.options.max_seq_len, QwenTokenizer(r.into).special,
                          read_generation_config(r.model_dir), model_file, SESSION_CONFIG)
    (r.into / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


ONNX = OnnxTarget()
