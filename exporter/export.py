"""`python -m exporter --target ...`: checkpoint → (quantize) → each target's files + tokenizer files + manifest.

The steps every target shares are here, in order: check the options (each target checks its own), check --out and
the targets' libraries, load and quantize once, then per target: tokenizer files, the target's own files
(Target.write), the manifest. What a target is lives in exporter/targets/; this module names none."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from exporter.bundle import BundleFacts, copy_tokenizer_files, write_manifest
from exporter.fixture import add_reference_fixture
from exporter.options import ExportOptions, QuantOptions
from exporter.output import atomic_output_dir, check_output
from exporter.quantize import awq_cached, default_embedding, quantize_with_recipe
from exporter.targets.registry import ALL, TARGETS, targets_named
from exporter.targets.schemes import SCHEMES, QuantScheme, require_symmetric, scheme_named, scheme_of_recipe
from exporter.targets.target import BundleRequest, Target, refuse_foreign_options
from runtimes.checkpoint import BUNDLED_MODELS_DIR, config_sha256, load_config, resolve_model_dir
from runtimes.errors import UserError
from runtimes.model import ModelArgs, from_pretrained
from runtimes.quant.recipe import is_quantized_checkpoint, load_quantized, quantized_weights_sha256
from runtimes.quiet import stage
from runtimes.tokenizer import QwenTokenizer

# Qwen3's thinking traces run to thousands of tokens: prompt, thinking and answer share this context
DEFAULT_MAX_SEQ_LEN = 4096
FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def prepare(model: str, quant: QuantOptions, max_seq_len: int, progress: bool = True, release: bool = False):
    """→ (module with caches for max_seq_len, QuantizedTensor per name, manifest quant dict, config, model_dir).
    `quant.embedding` is resolved (not auto).

    release=True (exports): the module keeps no float values for quantized weights (see quantize_module)."""
    model_dir = resolve_model_dir(model)
    if is_quantized_checkpoint(model_dir):
        module, weights, recipe, config = load_quantized(model_dir, max_seq_len)
        name = scheme_of_recipe(recipe.method, recipe.bits).name
        if quant.name not in (None, name):
            if not SCHEMES[quant.name].takes_checkpoint(SCHEMES[name]):
                raise UserError(f"{model} is already quantized as {name}; drop --quant or pass its full-precision "
                                "source")
            name = quant.name  # 8da4w: the same int4 RTN weights, run with 8-bit dynamic activations
        return module, weights, {"name": name, **_recipe_fields(recipe), **_checkpoint(model_dir)}, config, model_dir
    scheme = scheme_named(quant.name)
    # an export that rounds every linear to nearest reads each weight from the checkpoint only when it quantizes
    # it: the full-precision model is never in memory at once (AWQ runs the float model; fp32/fp16 keep it)
    lazy = release and scheme.method == "rtn"
    # an export never runs the reference's own KV cache (targets install theirs): not allocating it keeps 940 MB (the
    # 0.6B shape at 4096 positions, fp32) out of the export's peak memory
    module, config = from_pretrained(model_dir, max_seq_len=max_seq_len, lazy_linears=lazy, kv_cache=not release)
    if not scheme.quantized:  # fp16: the target stores and computes in fp16; the reference stays fp32
        return module, {}, {"name": scheme.name, "method": "none", "bits": scheme.bits}, config, model_dir
    if scheme.method == "awq":
        module, weights, recipe, qdir = awq_cached(module, model_dir, config, replace(quant, name=scheme.recipe),
                                                   max_seq_len, progress)
        return module, weights, {"name": scheme.name, **_recipe_fields(recipe), **_checkpoint(qdir)}, config, model_dir
    weights, recipe = quantize_with_recipe(module, model_dir, replace(quant, name=scheme.recipe), progress, release)
    return module, weights, {"name": scheme.name, **_recipe_fields(recipe)}, config, model_dir


def _checkpoint(qdir: Path) -> dict:
    """The manifest's record of the quantized checkpoint a bundle's weights come from (parity reads it)."""
    return {"checkpoint": {"path": str(Path(qdir).resolve()), "sha256": quantized_weights_sha256(qdir)}}


def source_id(model: str, model_dir: Path) -> str:
    """How a manifest names its source: 'tiny' and hub ids as given, a local directory as an absolute path
    (so parity --bundle finds it from any working directory)."""
    if model_dir.resolve().parent == BUNDLED_MODELS_DIR.resolve() or not Path(model).expanduser().exists():
        return model
    return str(model_dir.resolve())


def _recipe_fields(recipe) -> dict:
    fields = asdict(recipe)
    return {k: fields[k] for k in ("method", "bits", "group_size", "symmetric", "embedding", "calibration")}


def check_options(target: Target, options: ExportOptions, scheme: QuantScheme, alone: bool = True) -> None:
    """Refuse an option combination `target` cannot honour before any slow work. With `alone` False (--target all)
    the target sees the scheme it writes under all, and an option that applies to other targets only is not its
    concern."""
    target.check_options(options, scheme if alone else target.scheme_for(scheme), alone)
    if alone:
        scheme.check_target(target.name)
        refuse_foreign_options(target, options, [other for other in TARGETS.values() if other is not target])
    who = target.symmetric_only(options)
    if who:
        require_symmetric(options.quant.symmetric, who)


def _check_weights(targets: list[Target], options: ExportOptions, weights: dict) -> None:
    """What a quantized checkpoint brings, against what the targets take (the options said nothing of it)."""
    for target in targets:
        who = target.symmetric_only(options)
        if who:
            require_symmetric(all(qt.symmetric for qt in weights.values()), who)


def export(options: ExportOptions) -> dict:
    """Export options.model to one target's bundle at options.out, or with target ALL to one subdirectory of it per
    target from one quantization (each option goes to the targets that take it). The directory appears complete or
    not at all."""
    targets, alone = targets_named(options.target), options.target != ALL
    scheme = scheme_named(options.quant.name)
    embedding = default_embedding(options.quant.embedding, scheme, any(t.needs_int8_table(options) for t in targets))
    options = replace(options, quant=replace(options.quant, embedding=embedding))
    if not alone:
        scheme.check_activations(options.activations)
    for target in targets:
        check_options(target, options, scheme, alone)
    kind = "bundle" if alone else "bundles"
    model_dir = resolve_model_dir(options.model)
    check_output(options.out, kind, options.overwrite, [model_dir])
    for target in targets:
        target.check_libraries(options)
    start = time.perf_counter()
    limit, what = context_limit(load_config(model_dir))
    if options.max_seq_len is None:
        options = replace(options, max_seq_len=min(DEFAULT_MAX_SEQ_LEN, limit))
    if not 16 <= options.max_seq_len <= limit:
        raise UserError(f"--max-seq-len must be between 16 and the model's {what} ({limit})")
    with atomic_output_dir(options.out, kind, options.overwrite, [model_dir]) as tmp:
        with stage(f"loading {options.model}" + (f" and quantizing ({scheme.name})" if scheme.quantized else "")):
            module, weights, quant_fields, config, model_dir = prepare(
                options.model, options.quant, options.max_seq_len, options.progress, release=True)
        _check_weights(targets, options, weights)
        exported = SCHEMES[quant_fields["name"]]
        written = []
        for target in targets:
            into = tmp if alone else tmp / target.name
            into.mkdir(exist_ok=True)
            written_scheme = target.scheme_for(exported)
            fields = dict(quant_fields, name=written_scheme.name)
            if not written_scheme.quantized:
                fields["bits"] = written_scheme.bits
            if written_scheme.bits == 16 or target.stores_float16(options):
                check_float16_range(module, weights)
            request = BundleRequest(module, weights, written_scheme, fields, options, model_dir, into)
            with stage(f"{target.name}: writing the bundle"):
                written.append(write_bundle(target, request, config))
    size = sum(w["bytes"] for w in written)
    names = ", ".join(w["target"] for w in written)
    return {"out": str(Path(options.out)), "target": names if alone else f"all ({names})",
            "quant": quant_fields["name"], "bytes": size, "seconds": time.perf_counter() - start,
            "manifest_sha256": [w["manifest_sha256"] for w in written], "kv_cache": [w["kv_cache"] for w in written]}


def context_limit(config: dict) -> tuple[int, str]:
    """(the most positions the model supports, what sets it) — see ModelArgs.context_limit."""
    args = ModelArgs.from_config(config)
    if args.context_limit > args.max_position_embeddings:
        return args.context_limit, "YaRN factor x original_max_position_embeddings"
    return args.context_limit, "max_position_embeddings"


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


def write_bundle(target: Target, request: BundleRequest, config: dict) -> dict:
    """Tokenizer files, the target's own files, then the manifest (hashing every file) into request.into → what
    was written."""
    into = request.into
    copy_tokenizer_files(request.model_dir, into)
    with torch.no_grad():
        artifact = target.write(request)
    manifest = write_manifest(into, BundleFacts(
        source_id=source_id(request.options.model, request.model_dir), config_sha256=config_sha256(config),
        args=request.module.args, target=target.name, backend=target.backend, libraries=target.libraries,
        profile=artifact.profile, quant={**request.quant, **artifact.quant}, max_seq_len=request.options.max_seq_len,
        kv_dtype=artifact.kv_dtype, kv_layout=artifact.kv_layout, entry_points=artifact.entry_points,
        tokenizer=QwenTokenizer(into), extra=artifact.extra))
    manifest = add_reference_fixture(into, manifest)
    name = f"{target.name} ({artifact.profile})" if artifact.profile else target.name
    return {"target": name, "bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
            "manifest_sha256": hashlib.sha256((into / "manifest.json").read_bytes()).hexdigest(),
            "kv_cache": {"target": name, "dtype": artifact.kv_dtype, "positions": request.options.max_seq_len,
                         "bytes": manifest["kv_cache"]["bytes_at_max_context"]}}
