"""`python -m exporter --target ...`: checkpoint → (quantize) → target files + tokenizer + manifest."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from runtimes.errors import UserError
from runtimes.model import ModelArgs
from runtimes.quiet import stage

# Qwen3's thinking traces run to thousands of tokens: prompt, thinking and answer share this context
DEFAULT_MAX_SEQ_LEN = 4096
FLOAT16_MAX = float(torch.finfo(torch.float16).max)
KV_CALIBRATION = (4, 256)  # --kv-cache int8: sequences × tokens (at most --seq-len) of --calib its scales come from
BACKEND = {"onnx": "onnxruntime", "executorch": "executorch", "coreml": "coreml"}
KV_LAYOUT = {"onnx": "[layers] x key/value x [1, kv_heads, positions, head_dim]",
             "executorch": "[layers] x key/value x [1, positions, kv_heads, head_dim], inside the program",
             "coreml": "per chunk of layers, states k_cache, v_cache: [chunk layers, kv_heads, positions, head_dim]"}


def prepare(model: str, quant: str | None, group_size: int | None, symmetric: bool, embedding: str, calib: str,
            samples: int, seq_len: int, max_seq_len: int, progress: bool = True, release: bool = False,
            device: str = "cpu"):
    """→ (module with caches for max_seq_len, QuantizedTensor per name, manifest quant dict, config, model_dir).

    release=True (exports): the module keeps no float values for quantized weights (see quantize_module)."""
    from runtimes.checkpoint import resolve_model_dir
    from runtimes.model import from_pretrained
    from exporter.quantize import awq_cached, quantize_with_recipe
    from runtimes.quant.recipe import is_quantized_checkpoint, load_quantized

    model_dir = resolve_model_dir(model)
    if is_quantized_checkpoint(model_dir):
        module, weights, recipe, config = load_quantized(model_dir, max_seq_len)
        name = "awq-int4" if recipe.method == "awq" else f"int{recipe.bits}"
        if quant == "8da4w" and name == "int4":
            name = quant  # the same int4 RTN weights, run with 8-bit dynamic activations
        elif quant not in (None, name):
            raise UserError(f"{model} is already quantized as {name}; drop --quant or pass its full-precision source")
        return module, weights, {"name": name, **_recipe_fields(recipe), **_checkpoint(model_dir)}, config, model_dir
    quant = quant or "int4"
    # an export that rounds every linear to nearest reads each weight from the checkpoint only when it quantizes
    # it: the full-precision model is never in memory at once (AWQ runs the float model; fp32/fp16 keep it)
    lazy = release and quant in ("int8", "int4", "8da4w")
    # an export never runs the reference's own KV cache (targets install theirs): not allocating it keeps 940 MB (the
    # 0.6B shape at 4096 positions, fp32) out of the export's peak memory
    module, config = from_pretrained(model_dir, max_seq_len=max_seq_len, lazy_linears=lazy, kv_cache=not release)
    if quant == "fp32":
        return module, {}, {"name": "fp32", "method": "none", "bits": 32}, config, model_dir
    if quant == "fp16":  # the target stores and computes in fp16; the reference stays fp32
        return module, {}, {"name": "fp16", "method": "none", "bits": 16}, config, model_dir
    if quant == "awq-int4":
        module, weights, recipe, qdir = awq_cached(module, model_dir, config, quant, group_size, symmetric, embedding,
                                                   calib, samples, seq_len, max_seq_len, progress, device)
        return module, weights, {"name": quant, **_recipe_fields(recipe), **_checkpoint(qdir)}, config, model_dir
    # int8, int4 and 8da4w (int4 RTN weights; the 8-bit dynamic activations are the target's, executorch's)
    weights, recipe = quantize_with_recipe(module, model_dir, "int4" if quant == "8da4w" else quant, group_size,
                                           symmetric, embedding, calib, samples, seq_len, progress, release, device)
    return module, weights, {"name": quant, **_recipe_fields(recipe)}, config, model_dir


def _checkpoint(qdir: Path) -> dict:
    """The manifest's record of the quantized checkpoint a bundle's weights come from (parity reads it)."""
    from runtimes.quant.recipe import quantized_weights_sha256

    return {"checkpoint": {"path": str(Path(qdir).resolve()), "sha256": quantized_weights_sha256(qdir)}}


def source_id(model: str, model_dir: Path) -> str:
    """How a manifest names its source: 'tiny' and hub ids as given, a local directory as an absolute path
    (so parity --bundle finds it from any working directory)."""
    from runtimes.checkpoint import BUNDLED_MODELS_DIR

    if model_dir.resolve().parent == BUNDLED_MODELS_DIR.resolve() or not Path(model).expanduser().exists():
        return model
    return str(model_dir.resolve())


def _recipe_fields(recipe) -> dict:
    fields = asdict(recipe)
    return {k: fields[k] for k in ("method", "bits", "group_size", "symmetric", "embedding", "calibration")}


TARGETS = ("onnx", "executorch", "coreml")


def _target_quant(target: str, quant: str | None) -> str | None:
    """8da4w is ExecuTorch's name for int4 RTN weights with 8-bit dynamic activations; elsewhere it is int4. Core ML
    keeps its KV cache in fp16 states (the only state dtype iOS 18 has), so under --target all its bundle of an fp32
    export is fp16 (alone, --target coreml --quant fp32 is refused)."""
    if target == "coreml" and quant == "fp32":
        return "fp16"
    return "int4" if target != "executorch" and quant == "8da4w" else quant


def _target_fields(target: str, fields: dict) -> dict:
    """The manifest's quant fields for `target` (see _target_quant)."""
    name = _target_quant(target, fields["name"])
    return dict(fields, name=name, **({"bits": 16} if name == "fp16" else {}))


def onnx_kv_cache(kv_cache: str, int8_activations: bool) -> str:
    """--kv-cache auto for the onnx cpu profile: int8 where the linears run int8 activations (the fast path: the
    cache is a quarter of fp32's bytes and decode deep into the context is faster; long prompts prefill slower, see
    docs/onnx.md), float32 where the graph is exact or near-exact (fp32, fp16 (which stores it in fp16),
    --activations float)."""
    if kv_cache != "auto":
        return kv_cache
    return "int8" if int8_activations else "float32"


def check_options(target: str, quant: str | None, symmetric: bool, embedding: str, profile: str, npu_chunk: int,
                  delegate: str, activations: str | None, alone: bool = True, kv_cache: str = "auto",
                  qnn_socs: list[str] | None = None) -> None:
    """Refuse an option combination `target` cannot honour before any slow work. With `alone` False (--target all)
    an option that applies to other targets only is not this target's concern."""
    if target == "onnx":
        if qnn_socs and profile != "npu":
            raise UserError("--qnn-soc precompiles the onnx npu profile; add --profile npu")
        if profile == "npu" and quant == "fp32":
            raise UserError("the NPU computes in fp16: use --quant fp16, int8, int4 or awq-int4 with --profile npu")
        if profile == "npu" and not symmetric:
            raise UserError("the npu profile takes symmetric weights only (HTP's MatMulNBits); drop --asymmetric")
        if kv_cache not in ("auto", "float32") and profile != "cpu":
            raise UserError("--kv-cache applies to the onnx cpu profile (the npu profile's cache is fp16 already)")
        if kv_cache == "float16" and quant == "fp16":
            raise UserError("--quant fp16 keeps the KV cache in float16 already; drop --kv-cache float16")
        if profile == "npu" and not 1 <= npu_chunk <= 512:
            raise UserError("--npu-chunk must be between 1 and 512")
        if embedding == "int4" and profile == "npu" and quant not in ("fp32", "fp16"):
            raise UserError("the npu profile stores the embedding / LM head as int8 per row or unquantized; "
                            "use --embedding int8 (default) or none, or --profile cpu for an int4 table")
        if activations == "int8" and (profile != "cpu" or quant in ("fp32", "fp16")):
            raise UserError("--activations int8 applies to the quantized linears of the onnx cpu profile (ONNX "
                            "Runtime's MatMulNBits); use it with --quant int8, int4 or awq-int4 and --profile cpu")
    if not alone:
        return
    if qnn_socs and target != "onnx":
        raise UserError("--qnn-soc precompiles the onnx npu profile; use it with --target onnx --profile npu")
    if kv_cache not in ("auto", "float32") and target != "onnx":
        raise UserError(f"--kv-cache {kv_cache} is an onnx option; {target} keeps its cache in the model's precision")
    if target == "coreml":
        if quant == "fp32":
            raise UserError("--quant fp32 is not available for coreml: Core ML keeps the KV cache in states, which "
                            "are fp16 only (iOS 18); use --quant fp16 (or int8/int4 weights)")
        if activations == "int8":
            raise UserError("--activations int8 is not available for coreml: Core ML keeps activations in fp16")
        if profile != "cpu":
            raise UserError("--profile is an onnx option; a Core ML bundle runs on CPU, GPU or the Neural Engine as "
                            "the app chooses")
    if target != "executorch":
        if quant == "8da4w":
            raise UserError("--quant 8da4w (8-bit dynamic activations, int4 weights) is ExecuTorch's XNNPACK scheme; "
                            f"for --target {target} use --quant int4")
        if delegate != "xnnpack":
            raise UserError("--delegate applies to --target executorch only")
    else:
        if profile != "cpu":
            raise UserError("--profile is an onnx option; for ExecuTorch NPUs choose --delegate coreml or qnn")
        if activations == "float" and quant not in ("fp32", "fp16"):
            raise UserError("XNNPACK runs quantized linears with 8-bit dynamic activations only; drop --activations "
                            "float, or use --quant fp32/fp16 for float activations")


def _check_libraries(target: str, symmetric: bool, delegate: str, qnn_socs: list[str] | None = None) -> None:
    """The target's libraries import and take this recipe (a missing SDK is a one-line error, before any work)."""
    if target == "coreml":
        if not symmetric:
            raise UserError("the Core ML target takes symmetric weights only; drop --asymmetric")
        from exporter.targets.coreml import _coremltools

        _coremltools()
    elif target == "executorch":
        if not symmetric:
            raise UserError("XNNPACK's low-bit linears take symmetric weights only; drop --asymmetric for executorch")
        from exporter.targets.executorch import check_delegate

        check_delegate(delegate)
    else:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("the ONNX target needs onnx: pip install 'qwen-edge[onnx]'") from None
        if qnn_socs:
            from runtimes.backends.qnn import available

            if not available():
                raise UserError("--qnn-soc compiles with Qualcomm's HTP compiler, which comes with ONNX Runtime's QNN "
                                "execution provider: pip install 'qwen-edge[qnn]'")


def export(model: str, target: str, quant: str | None, out: str, group_size: int | None = None, symmetric: bool = True,
           embedding: str = "auto", calib: str = "builtin", samples: int = 128, seq_len: int = 512,
           max_seq_len: int | None = None, profile: str = "cpu", npu_chunk: int = 32, delegate: str = "xnnpack",
           activations: str | None = None, overwrite: bool = False, progress: bool = True, device: str = "cpu",
           kv_cache: str = "auto", qnn_socs: list[str] | None = None) -> dict:
    """Export `model` to one target's bundle at `out`, or with target "all" to out/onnx, out/executorch and
    out/coreml from one quantization (each option goes to the targets it applies to). The directory appears
    complete or not at all. qnn_socs (names of runtimes.backends.qnn.SOCS): the npu profile's graphs are also
    compiled into HTP context binaries for these SoCs."""
    from runtimes.checkpoint import load_config, resolve_model_dir
    from exporter.output import atomic_output_dir, check_output

    from exporter.quantize import default_embedding

    targets = TARGETS if target == "all" else (target,)
    embedding = default_embedding(embedding, quant, npu="onnx" in targets and profile == "npu")
    if target == "all" and quant == "8da4w" and activations == "float":
        raise UserError("--quant 8da4w runs int8 activations; drop --activations float")
    for name in targets:
        check_options(name, _target_quant(name, quant) if target == "all" else quant, symmetric, embedding, profile,
                      npu_chunk, delegate, activations, alone=target != "all", kv_cache=kv_cache, qnn_socs=qnn_socs)
    model_dir = resolve_model_dir(model)
    check_output(out, "bundles" if target == "all" else "bundle", overwrite, [model_dir])
    for name in targets:
        _check_libraries(name, symmetric, delegate, qnn_socs if name == "onnx" else None)
    start = time.perf_counter()
    limit, what = context_limit(load_config(model_dir))
    max_seq_len = min(DEFAULT_MAX_SEQ_LEN, limit) if max_seq_len is None else max_seq_len
    if not 16 <= max_seq_len <= limit:
        raise UserError(f"--max-seq-len must be between 16 and the model's {what} ({limit})")
    with atomic_output_dir(out, "bundles" if target == "all" else "bundle", overwrite, [model_dir]) as tmp:
        with stage(f"loading {model}" + (f" and quantizing ({quant})" if quant not in ("fp32", "fp16") else "")):
            module, weights, quant_fields, config, model_dir = prepare(
                model, quant, group_size, symmetric, embedding, calib, samples, seq_len, max_seq_len, progress,
                release=True, device=device)
        written = []
        for name in targets:
            into = tmp / name if target == "all" else tmp
            into.mkdir(exist_ok=True)
            fields = _target_fields(name, quant_fields)
            if stores_float16(name, fields["name"], profile, delegate):
                check_float16_range(module, weights)
            with stage(f"{name}: writing the bundle"):
                written.append(_write_bundle(name, model, module, weights, fields, config, model_dir, into,
                                             max_seq_len, profile=profile if name == "onnx" else "cpu",
                                             npu_chunk=npu_chunk, delegate=delegate if name == "executorch" else
                                             "xnnpack", activations=activations, kv_cache=kv_cache,
                                             qnn_socs=qnn_socs if name == "onnx" else None, calib=calib,
                                             seq_len=seq_len))
    size = sum(w["bytes"] for w in written)
    names = ", ".join(w["target"] for w in written)
    return {"out": str(Path(out)), "target": f"all ({names})" if target == "all" else names,
            "quant": quant_fields["name"], "bytes": size, "seconds": time.perf_counter() - start,
            "manifest_sha256": [w["manifest_sha256"] for w in written], "kv_cache": [w["kv_cache"] for w in written]}


def context_limit(config: dict) -> tuple[int, str]:
    """(the most positions the model supports, what sets it) — see ModelArgs.context_limit."""
    args = ModelArgs.from_config(config)
    if args.context_limit > args.max_position_embeddings:
        return args.context_limit, "YaRN factor x original_max_position_embeddings"
    return args.context_limit, "max_position_embeddings"


def stores_float16(target: str, quant: str, profile: str, delegate: str) -> bool:
    """Whether the bundle keeps weights or scales in float16: fp16 bundles, Core ML (fp16 compute and scales), the
    onnx npu profile and ExecuTorch's Core ML delegate."""
    return (quant == "fp16" or target == "coreml" or (target == "onnx" and profile == "npu")
            or (target == "executorch" and delegate == "coreml"))


def check_float16_range(module, weights: dict) -> None:
    """Refuse a finite weight (or quantization scale) that float16 cannot hold: it would be stored as inf."""
    tensors = [(name, p) for name, p in module.named_parameters() if not p.is_meta and p.is_floating_point()]
    tensors += [(f"{name} (its quantization scales)", qt.scales) for name, qt in weights.items()]
    for name, tensor in tensors:
        peak = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
        if peak > FLOAT16_MAX:
            raise UserError(f"weight {name} holds {peak:.3g}, beyond float16's range (±{FLOAT16_MAX:g}): this bundle "
                            "would store it as inf; export with --quant fp32, int8 or int4 to onnx (cpu) or "
                            "executorch, which keep such values in float32, or fix the checkpoint")


def _write_genai_config(args, max_seq_len: int, model_dir: Path, into: Path, model_file: str) -> None:
    import json

    from exporter.targets.genai import GENAI_CONFIG, genai_config
    from runtimes.backends.onnxruntime import SESSION_CONFIG
    from runtimes.sampling import read_generation_config
    from runtimes.tokenizer import QwenTokenizer

    config = genai_config(args, max_seq_len, QwenTokenizer(into).special, read_generation_config(model_dir),
                          model_file, SESSION_CONFIG)
    (into / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def _write_bundle(target: str, model: str, module, weights: dict, quant_fields: dict, config: dict, model_dir: Path,
                  into: Path, max_seq_len: int, profile: str, npu_chunk: int, delegate: str,
                  activations: str | None, kv_cache: str = "auto", qnn_socs: list[str] | None = None,
                  calib: str = "builtin", seq_len: int = 512) -> dict:
    """One target's files, tokenizer files and manifest into `into` → what was written."""
    import hashlib

    from exporter.bundle import copy_tokenizer_files, write_manifest
    from exporter.fixture import add_reference_fixture
    from runtimes.checkpoint import config_sha256
    from runtimes.tokenizer import QwenTokenizer

    copy_tokenizer_files(model_dir, into)
    fp16 = quant_fields["name"] == "fp16"
    kv_dtype = "float16" if fp16 else "float32"
    kv_layout, extra = KV_LAYOUT[target], {}
    with torch.no_grad():
        if target == "onnx" and profile == "npu":
            from exporter.targets.onnx_npu import KV_LAYOUT as NPU_KV_LAYOUT, export_npu_bundle

            entry_points, extra = export_npu_bundle(module, weights, into, max_seq_len, npu_chunk, quant_fields,
                                                    qnn_socs)
            kv_dtype, kv_layout = "float16", NPU_KV_LAYOUT  # fp16 activations and cache, whatever the weights
        elif target == "onnx":
            from exporter.targets.onnx_cpu import export_cpu

            # the default: int8 activations for quantized linears on CPU (MatMulNBits at accuracy level 4, the fastest
            # kernels; the reference rounds activations the same way); --activations float keeps them exact
            int8_activations = bool(weights) and activations != "float"
            kv_cache = onnx_kv_cache(kv_cache, int8_activations)
            kv_scales = None
            if kv_cache == "int8":  # static per-channel scales, from the keys and values of calibration text
                from calibration.datasets import calibration_set
                from runtimes.quant.kv_calibration import calibrate

                with stage("onnx: calibrating the int8 KV cache's scales"):
                    text = calibration_set(calib, QwenTokenizer(model_dir).encode, KV_CALIBRATION[0],
                                           min(KV_CALIBRATION[1], seq_len, max_seq_len))
                    kv_scales = calibrate(module, text.tokens, weights)
            entry_points = export_cpu(module, weights, into, max_seq_len, fp16, int8_activations, kv_cache,
                                      kv_scales)
            kv_dtype = entry_points[0]["inputs"][-1]["dtype"]
            if int8_activations:
                quant_fields["activations"] = "int8-dynamic-per-block"
            # ORT-GenAI, the stock ONNX LLM client, runs it unchanged
            _write_genai_config(module.args, max_seq_len, model_dir, into, entry_points[0]["file"])
        elif target == "coreml":
            from exporter.targets.coreml import SCALE_DTYPE, export_coreml

            entry_points = export_coreml(module, weights, into, max_seq_len)
            for bits in sorted({qt.bits for qt in weights.values()}):
                quant_fields[f"int{bits}_scale_dtype"] = SCALE_DTYPE
            profile, kv_dtype = None, "float16"
        else:
            from exporter.targets.executorch import ACTIVATIONS, INT4_SCALE_DTYPE, export_executorch

            special = QwenTokenizer(into).special
            entry_points = export_executorch(module, weights, into, max_seq_len, bos_id=special.endoftext,
                                             eos_ids=sorted(special.stop), fp16=fp16, delegate=delegate)
            if delegate == "xnnpack":
                if weights:
                    quant_fields["activations"] = ACTIVATIONS
                if any(qt.bits == 4 for qt in weights.values()):
                    quant_fields["int4_scale_dtype"] = INT4_SCALE_DTYPE
            else:  # Core ML: weight-only constexpr ops with float16 scales, fp16 compute
                for bits in sorted({qt.bits for qt in weights.values()}):
                    quant_fields[f"int{bits}_scale_dtype"] = "float16"
            profile = delegate
    manifest = write_manifest(into, source_id=source_id(model, model_dir), config_sha256=config_sha256(config),
                              args=module.args, target=target, backend=BACKEND[target], profile=profile,
                              quant=quant_fields, max_seq_len=max_seq_len,
                              kv_dtype=kv_dtype, kv_bytes_per_value={"float32": 4, "float16": 2, "int8": 1}[kv_dtype],
                              kv_layout=kv_layout, entry_points=entry_points, tokenizer=QwenTokenizer(into),
                              extra=extra)
    manifest = add_reference_fixture(into, manifest)
    return {"target": f"{target} ({profile})" if profile else target,
            "bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
            "manifest_sha256": hashlib.sha256((into / "manifest.json").read_bytes()).hexdigest(),
            "kv_cache": {"target": f"{target} ({profile})" if profile else target, "dtype": kv_dtype,
                         "positions": max_seq_len, "bytes": manifest["kv_cache"]["bytes_at_max_context"]}}
