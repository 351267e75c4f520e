"""Quantization recipes: a recipe → QuantizedTensor per weight, the fake-quant reference module, and quantized
checkpoints (QDIR) on disk.

A QDIR is the source's HF layout with `model.safetensors` holding the full-precision tensors that stay so (norms,
after AWQ's folding) and, per quantized weight NAME, NAME.qweight (int8 codes, or int4 packed two per byte),
NAME.scales (fp32) and NAME.zeros (asymmetric only), plus `quant_recipe.json`. Every target takes it as
--model QDIR, and parity reads the weights of an AWQ bundle from one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from runtimes.checkpoint import QUANT_RECIPE, load_config, resolve_model_dir
from runtimes.errors import UserError
from runtimes.files import as_os_error, file_table, sha256_file
from runtimes.model import ModelArgs, check_model_memory, from_pretrained, hf_name, module_from_weights
from runtimes.quant.awq import AWQConfig, awq_quantize
from runtimes.quant.packing import int8_block, pack_int4, unpack_int4
from runtimes.quant.rtn import (QuantizedTensor, dequantize, fake_quantize_activations,
                                fake_quantize_activations_blockwise, quantize)
from runtimes.tokenizer import TOKENIZER_FILES

RECIPE_FILE = QUANT_RECIPE


@dataclass
class QuantRecipe:
    method: str  # "rtn" | "awq"
    bits: int  # of the block linears: 8 or 4
    group_size: int | None  # None: per output channel
    symmetric: bool
    embedding: str  # "int8" (per row) | "int4" (group-wise) | "none"
    calibration: dict | None = None  # source, samples, seq_len, sha256 (AWQ)
    source_model: str | None = None
    source_config_sha256: str | None = None
    awq_alphas: dict | None = None

    @classmethod
    def for_quant(cls, quant: str, group_size: int = 128, symmetric: bool = True, embedding: str = "int8"):
        if quant == "int8":
            return cls("rtn", 8, None, True, embedding)
        if quant in ("int4", "awq-int4"):
            return cls("awq" if quant == "awq-int4" else "rtn", 4, group_size, symmetric, embedding)
        raise UserError(f"--quant {quant} is not a weight quantization (choose int8, int4 or awq-int4)")


def block_linear_names(module) -> list[str]:
    return [f"{name}.weight" for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and name.startswith("layers.")]


def release_weight(module, name: str) -> None:
    """Drop a parameter's values, keeping its shape (a meta tensor): a target reads a quantized weight's codes,
    never its float values, so exporting holds one copy of each weight, not two. A tied LM head goes too."""
    param = module.get_parameter(name)
    set_weight(module, name, torch.empty(param.shape, dtype=param.dtype, device="meta"))


def set_weight(module, name: str, values: torch.Tensor) -> None:
    """Replace parameter `name` (and the LM head tied to the embedding) with `values`."""
    param = torch.nn.Parameter(values, requires_grad=False)
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner), attr, param)
    if name == "embed_tokens.weight" and module.args.tie_word_embeddings:
        module.lm_head.weight = param


def _values(module, name: str, param: torch.Tensor) -> torch.Tensor:
    """A weight's values: the parameter, or for a module loaded with lazy_linears, read from the checkpoint now."""
    lazy = getattr(module, "lazy_weights", {})
    if param.is_meta and name in lazy:
        return lazy.pop(name).load()
    return param


def quantize_module(module, recipe: QuantRecipe, calib_tokens: torch.Tensor | None = None,
                    progress: bool = True, release: bool = False) -> dict[str, QuantizedTensor]:
    """QuantizedTensor per weight name; AWQ also folds its scales into `module` (exact in fp32).

    release=True drops each quantized weight's float values from `module` once quantized (for exports, whose
    targets read the codes): peak memory stays near one fp32 copy of the model. The module then only runs
    after apply_fake_quant-like restoration, so parity references keep the default.
    """
    weights: dict[str, QuantizedTensor] = {}
    if recipe.method == "awq":
        if calib_tokens is None:
            raise ValueError("AWQ needs calibration tokens")
        device = (recipe.calibration or {}).get("device", "cpu")
        weights, report = awq_quantize(module, calib_tokens, AWQConfig(bits=recipe.bits, group_size=recipe.group_size,
                                                                       symmetric=recipe.symmetric), progress,
                                       device)
        recipe.awq_alphas = report.alphas
    else:
        params = dict(module.named_parameters())
        for name in block_linear_names(module):
            weights[name] = quantize(_values(module, name, params.pop(name)), recipe.bits, recipe.group_size,
                                     recipe.symmetric)
            if release:
                release_weight(module, name)
    if release and recipe.method == "awq":
        for name in list(weights):
            release_weight(module, name)
    tables = ["embed_tokens.weight"] + ([] if module.args.tie_word_embeddings else ["lm_head.weight"])
    for name in tables:
        table = _values(module, name, module.get_parameter(name))
        if recipe.embedding == "int8":
            weights[name] = quantize(table, 8, None, True)
        elif recipe.embedding == "int4":
            weights[name] = quantize(table, 4, recipe.group_size or 128, recipe.symmetric)
        elif module.get_parameter(name).is_meta:  # read lazily and kept unquantized: the target needs its values
            set_weight(module, name, table.float())
        del table
        if release and name in weights:
            release_weight(module, name)
    return weights


@torch.no_grad()
def apply_fake_quant(module, weights: dict[str, QuantizedTensor], activations: str = "float",
                     int4_scale_dtype: str = "float32", int8_scale_dtype: str = "float32") -> None:
    """Replace each quantized weight by its dequantized value: the parity reference for artifacts.

    activations "int8-dynamic-per-token" also rounds the input of every quantized linear (the LM head included
    when the table is quantized) as XNNPACK's dynamically quantized kernels do, "int8-dynamic-per-block" per block
    of the weight as ONNX Runtime's MatMulNBits at accuracy level 4 does; int4/int8_scale_dtype ("bfloat16",
    "float16") round the scales of 4-/8-bit weights as a target that stores them so computes with them
    (XNNPACK's qb4w kernels keep bf16 group scales, Core ML keeps fp16 scales).
    """
    scale_dtypes = {4: int4_scale_dtype, 8: int8_scale_dtype}
    for name, qt in weights.items():
        if scale_dtypes[qt.bits] != "float32":
            qt = replace(qt, scales=qt.scales.to(getattr(torch, scale_dtypes[qt.bits])).float())
        module.get_parameter(name).copy_(dequantize(qt))
    if activations == "float":
        return
    linears = {name.removesuffix(".weight"): qt for name, qt in weights.items() if name != "embed_tokens.weight"}
    if "embed_tokens.weight" in weights and module.args.tie_word_embeddings:
        linears["lm_head"] = weights["embed_tokens.weight"]
    for name, qt in sorted(linears.items()):
        if activations == "int8-dynamic-per-token":
            hook = lambda _, args: (fake_quantize_activations(args[0]),)  # noqa: E731
        elif activations == "int8-dynamic-per-block":
            # ONNX Runtime's MatMulNBits at accuracy level 4: int8 per block of the weight's (int4 group, or the
            # int8_block an int8 row is cut into)
            block = qt.group_size if qt.bits == 4 else int8_block(qt.shape[1])
            hook = lambda _, args, block=block: (fake_quantize_activations_blockwise(args[0], block),)  # noqa: E731
        else:
            raise ValueError(f"unknown activation quantization {activations!r}")
        module.get_submodule(name).register_forward_pre_hook(hook)


def save_quantized(out: Path, module, config: dict, weights: dict[str, QuantizedTensor], recipe: QuantRecipe,
                   source_dir: Path) -> None:
    tensors = {}
    for name, param in module.state_dict().items():
        if name in weights or (name == "lm_head.weight" and module.args.tie_word_embeddings):
            continue
        tensors[hf_name(name)] = param.detach().float().contiguous()
    for name, qt in weights.items():
        base = hf_name(name)
        tensors[f"{base}.qweight"] = pack_int4(qt.q, qt.symmetric) if qt.bits == 4 else qt.q.contiguous()
        tensors[f"{base}.scales"] = qt.scales.float().contiguous()
        if qt.zeros is not None:
            tensors[f"{base}.zeros"] = qt.zeros.contiguous()
    try:
        save_file(tensors, out / "model.safetensors", metadata={"format": "qwen-edge-quantized"})
    except Exception as exc:  # safetensors' own error type: a full disk is an OSError inside it
        raise as_os_error(exc, out / "model.safetensors") from None
    (out / "config.json").write_text(json.dumps(config, indent=2))
    layout = {name: {"bits": qt.bits, "group_size": qt.group_size, "symmetric": qt.symmetric}
              for name, qt in weights.items()}
    for fname in TOKENIZER_FILES:
        if (source_dir / fname).is_file():
            shutil.copy2(source_dir / fname, out / fname)
    # written last: "files" (every other file with its size and sha256) proves to --overwrite that the directory is
    # still exactly what this tool wrote
    (out / RECIPE_FILE).write_text(json.dumps({"recipe": asdict(recipe), "weights": layout,
                                               "files": file_table(out, skip=(RECIPE_FILE,))}, indent=2))


def is_quantized_checkpoint(model_dir: Path) -> bool:
    return (model_dir / RECIPE_FILE).is_file()


def load_quantized(model_dir: Path, max_seq_len: int = 1024):
    """QDIR → (fake-quant fp32 module, QuantizedTensor per name, QuantRecipe, config)."""
    config = load_config(model_dir)
    meta = json.loads((model_dir / RECIPE_FILE).read_text())
    recipe = QuantRecipe(**meta["recipe"])
    check_model_memory(ModelArgs.from_config(config), max_seq_len, torch.float32, str(model_dir))
    try:
        tensors = load_file(model_dir / "model.safetensors")
    except Exception as exc:
        raise UserError(f"{model_dir}/model.safetensors is corrupt or truncated ({str(exc).splitlines()[0]}); "
                        "quantize again") from None
    weights = {}
    for name, layout in meta["weights"].items():
        base = hf_name(name)
        signed = layout["symmetric"]
        q = tensors.pop(f"{base}.qweight")
        q = unpack_int4(q, signed) if layout["bits"] == 4 else q
        zeros = tensors.pop(f"{base}.zeros", None)
        weights[name] = QuantizedTensor(q, tensors.pop(f"{base}.scales"), zeros, layout["bits"], layout["group_size"])
    state = {k.removeprefix("model."): v for k, v in tensors.items()}
    for name, qt in weights.items():
        state[name] = dequantize(qt)
    module = module_from_weights(ModelArgs.from_config(config), state, max_seq_len)
    return module, weights, recipe, config


GROUP_SIZES = (128, 64, 32)


def choose_group_size(args, requested: int | None) -> int:
    """The requested int4 group size, checked against every linear's input width; or, when none was
    requested, the largest of 128/64/32 that divides them all."""
    widths = {"hidden_size": args.hidden_size, "intermediate_size": args.intermediate_size,
              "heads x head_dim": args.num_attention_heads * args.head_dim}
    for size in [requested] if requested else GROUP_SIZES:
        bad = [f"{name} {width}" for name, width in widths.items() if width % size]
        if not bad:
            return size
    if requested:
        raise UserError(f"--group-size {requested} does not divide the linears' input width ({', '.join(bad)}); "
                        "choose one that does, or leave --group-size out to pick one")
    raise UserError(f"none of the group sizes {GROUP_SIZES} divides the linears' input widths {widths}")


def check_device(device: str) -> str:
    """`device` if torch can use it here, else a UserError saying what to do."""
    if device == "cpu":
        return device
    if device != "cuda":
        raise UserError(f"--device {device}: choose cpu or cuda")
    if not torch.cuda.is_available():
        raise UserError(f"--device cuda: torch {torch.__version__} sees no CUDA GPU here; run on a machine with one "
                        "and a CUDA build of torch, or leave --device out (AWQ then runs on the CPU)")
    return device


def load_module(model: str | Path, max_seq_len: int = 1024, dtype: torch.dtype = torch.float32):
    """The module of any checkpoint → (module, config): a float one's edge module, or a quantized checkpoint's
    fake-quant module (each quantized weight replaced by its dequantized value)."""
    model_dir = resolve_model_dir(str(model))
    if is_quantized_checkpoint(model_dir):
        module, _, _, config = load_quantized(model_dir, max_seq_len)
        return module, config
    return from_pretrained(model_dir, max_seq_len=max_seq_len, dtype=dtype)


def quantized_weights_sha256(qdir: Path) -> str:
    return sha256_file(Path(qdir) / "model.safetensors")


def reference_weights(source: str, quant: dict, max_seq_len: int):
    """The weights a bundle was exported with, for its parity reference → (module, QuantizedTensor per name,
    config). `quant` is the manifest's quant record. A float bundle's are its source's; a quantized one's come from
    the quantized checkpoint the manifest records (a QDIR it was exported from, or the one an AWQ export kept),
    or, for round-to-nearest, from quantizing the source again (deterministic). AWQ is never re-run."""
    model_dir = resolve_model_dir(source)
    recorded = quant.get("checkpoint")
    if is_quantized_checkpoint(model_dir):
        qdir = model_dir
    elif recorded and quant.get("method") == "awq":
        qdir = Path(recorded["path"])
        if not is_quantized_checkpoint(qdir):
            raise UserError(f"this AWQ bundle's quantized weights were kept in {qdir}, which is gone; pass the "
                            "quantized checkpoint with --reference QDIR (python -m exporter quantize --quant awq-int4 "
                            "writes one), or export again")
    else:
        qdir = None
    if qdir is not None:
        if recorded and quantized_weights_sha256(qdir) != recorded["sha256"]:
            raise UserError(f"{qdir} does not hold the quantized weights this bundle was exported with (their sha256 "
                            "differs); pass the right one with --reference")
        module, weights, recipe, config = load_quantized(qdir, max_seq_len)
        return module, weights, config
    module, config = from_pretrained(model_dir, max_seq_len=max_seq_len)
    if quant["method"] == "none":
        return module, {}, config
    if quant["method"] == "awq":
        raise UserError("an AWQ bundle's reference needs its quantized weights: pass --reference QDIR (the quantized "
                        "checkpoint it was exported from)")
    recipe = QuantRecipe("rtn", quant["bits"], quant.get("group_size"), quant.get("symmetric", True),
                         quant.get("embedding", "int8"))
    return module, quantize_module(module, recipe, progress=False), config
