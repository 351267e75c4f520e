"""Arguments and small helpers that several commands share."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

from exporter.options import QuantOptions
from runtimes.errors import UserError
from runtimes.files import input_file, what_is
from runtimes.memory import FLAG


MODEL_HELP = ("a Qwen3 checkpoint: a local Hugging Face directory (config.json + *.safetensors), a quantized "
              "checkpoint written by `quantize`, a hub id such as Qwen/Qwen3-0.6B (needs network), or 'tiny', the "
              "bundled model")


def model_argument(p, default: str | None = "tiny", help: str = MODEL_HELP, required: bool = False,
                   metavar: str = "DIR|HUB_ID|tiny") -> None:
    """--model, the one definition every command uses (p may be a mutually exclusive group)."""
    p.add_argument("--model", default=default, required=required, metavar=metavar,
                   help=help + (f" (default: {default})" if default else ""))


def max_new_tokens_argument(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--max-new-tokens", type=int, default=default, metavar="N", help=f"{help} (default: {default})")
    # the spelling bench and parity had before: still read, no longer shown
    p.add_argument("--new-tokens", type=int, dest="max_new_tokens", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def quant_arguments(p: argparse.ArgumentParser) -> None:
    """How weights are quantized: shared by export and quantize."""
    p.add_argument("--group-size", type=int, choices=(32, 64, 128),
                   help="int4 group size: smaller is more accurate and larger (default: the largest of 128, 64, 32 "
                        "that divides every linear's input width; 128 for Qwen3 0.6B-4B, 64 for tiny)")
    p.add_argument("--asymmetric", action="store_true",
                   help="int4 with a zero point per group (default: symmetric, which every target runs)")
    p.add_argument("--embedding", default="auto", choices=("auto", "int8", "int4", "none"),
                   help="the embedding / LM head table: int8 per row, int4 group-wise, or unquantized (default auto: "
                        "int4 with int4 weights, as one table that the embedding gathers from and the LM head reads; "
                        "int8 with int8 weights, or for the onnx npu profile)")
    p.add_argument("--calib", default="builtin", metavar="builtin|arithmetic|FILE",
                   help="calibration text for AWQ and for the onnx int8 KV cache's scales: builtin (docs + chat "
                        "arithmetic), arithmetic (tiny's problems), or a .txt / .jsonl file (default: builtin)")
    p.add_argument("--samples", type=int, default=128, metavar="N", help="AWQ calibration windows (default: 128)")
    p.add_argument("--seq-len", type=int, default=512, metavar="N", help="tokens per window (default: 512)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where AWQ's searches run; cuda takes one block at a time onto a GPU (default: cpu)")


def memory_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(FLAG, metavar="SIZE",
                   help="the memory this command may plan to use, e.g. 8G: before loading, the model's weights, KV "
                        "cache at the context asked for and working memory are added up and refused past it "
                        "(default: the memory available here; a larger SIZE runs anyway, none skips the check)")


def quant_options(args, name: str | None) -> QuantOptions:
    """quant_arguments' flags, and --quant `name`, as QuantOptions."""
    return QuantOptions(name=name, group_size=args.group_size, symmetric=not args.asymmetric, embedding=args.embedding,
                        calib=args.calib, samples=args.samples, seq_len=args.seq_len, device=check_device(args.device))


def out_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", metavar="DIR", help=f"{what} to write; it appears complete or not at all")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when it is a directory this tool wrote (never the input model, ~, . or /)")


def _inside(path: Path, bundles: Sequence[str]) -> str | None:
    for bundle in bundles:
        if Path(bundle).expanduser().is_dir() and path.is_relative_to(Path(bundle).expanduser().resolve()):
            return bundle
    return None


def check_writable(path: str | None, flag: str = "--json", bundles: Sequence[str] = ()) -> None:
    """Fail before the work, not after it, when a report file cannot be written: its directory is missing, the
    path is a directory, a FIFO or a device (a FIFO would block the write until someone reads it), or it lies in
    one of `bundles` (a file added to a bundle fails its next verify)."""
    if path is None:
        return
    given = Path(path).expanduser()
    resolved = given.resolve()
    if resolved.exists() and not resolved.is_file() or not resolved.exists() and os.path.lexists(given):
        kind = what_is(resolved) if resolved.exists() else "a broken symbolic link"
        raise UserError(f"cannot write {flag} {path}: it is {kind}; pass a path for a regular file")
    if not resolved.parent.is_dir():
        raise UserError(f"cannot write {flag} {path}: directory {resolved.parent} does not exist")
    bundle = _inside(resolved, bundles)
    if bundle:
        raise UserError(f"cannot write {flag} {path}: it is inside the bundle {bundle}, which would then fail "
                        "verification (a file its manifest does not list); write it outside the bundle")


def check_output_dir(path: str | None, flag: str, bundles: Sequence[str] = ()) -> None:
    """Fail before the work when a directory for reports (--plots) cannot be made or used."""
    if path is None:
        return
    resolved = Path(path).expanduser().resolve()
    existing = next(p for p in (resolved, *resolved.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise UserError(f"cannot write {flag} {path}: {existing} is {what_is(existing)}, not a directory; pass a "
                        "directory path")
    bundle = _inside(resolved, bundles)
    if bundle:
        raise UserError(f"cannot write {flag} {path}: it is inside the bundle {bundle}, which would then fail "
                        "verification; write it outside the bundle")


def check_calib(calib: str) -> None:
    """A --calib FILE is a regular file: refused before the model is loaded, not after."""
    if calib not in ("builtin", "arithmetic"):
        input_file(calib, "--calib", "pass builtin, arithmetic, or a .txt/.jsonl file")


def write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}); check that its directory exists") from None


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2))


def int_list(text: str, flag: str, allow_none: bool = False) -> list:
    """'32,128' → [32, 128]; with allow_none, 'none' (or 'unlimited') → None."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if allow_none and part.lower() in ("none", "unlimited"):
            values.append(None)
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise UserError(f"{flag} takes comma-separated integers{' or none' if allow_none else ''}, "
                            f"not {part!r}") from None
    return values


def check_device(device: str) -> str:
    from runtimes.quant.recipe import check_device as check

    return check(device)


def need_torch(what: str) -> None:
    """torch is an extra (the runtime alone runs bundles without it): say so in one line when a command needs it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs torch, which is not installed: pip install 'qwen-edge[torch]' "
                        "(or '.[dev]' from a checkout)") from None
