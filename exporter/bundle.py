"""Bundle directories: atomic writes, tokenizer files, and the manifest every runtime and app reads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from runtimes.bundle import MANIFEST, schema_errors, sha256_file
from runtimes.errors import UserError
from runtimes.thinking import STOP_THINKING_TEXT

FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings")


def _apply_umask(root: Path) -> None:
    """mkdtemp makes 0700 dirs and some writers 0600 files; give the result the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def remove_stale_partials(out: Path) -> None:
    """Temp dirs of earlier runs for the same --out whose process is gone (killed with SIGKILL, or a machine that
    lost power: nothing could clean up then) are removed before a new run starts."""
    for tmp in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(tmp.name.rsplit(".partial-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False):
    """Yield a temp dir beside `out`; on success it replaces `out`, on any failure it is removed.

    So an interrupted or failed export never leaves a half-written directory at `out`.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} already exists and is not empty; remove it or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {out.parent} ({exc.strerror}); choose another --out") from None
    try:
        yield tmp
        _apply_umask(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def copy_tokenizer_files(model_dir: Path, bundle_dir: Path) -> None:
    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir} has no tokenizer.json, and a bundle needs one for chat; "
                        "copy the checkpoint's tokenizer files next to its config.json")
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, bundle_dir / name)


TARGET_LIBRARIES = {"onnx": ("onnx", "onnxruntime"), "executorch": ("executorch", "torchao"),
                    "coreml": ("coremltools", "torchao")}


def library_versions(target: str) -> dict[str, str]:
    """The tool and the libraries that shaped this bundle's bytes (same versions + same inputs = same bundle)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("qwen-edge", "torch", "numpy", "safetensors", "tokenizers", *TARGET_LIBRARIES.get(target, ())):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def write_manifest(bundle_dir: Path, *, source_id: str, config_sha256: str, args, target: str, backend: str,
                   quant: dict, max_seq_len: int, kv_dtype: str, kv_bytes_per_value: int, kv_layout: str,
                   entry_points: list[dict], tokenizer, profile: str | None = None) -> dict:
    """Hash every file already in `bundle_dir`, then write a schema-checked manifest.json beside them.

    `args` is the module's ModelArgs; `tokenizer` a runtimes QwenTokenizer of the bundle.
    """
    from exporter import __version__

    special = tokenizer.special
    kv_bytes = (2 * args.num_hidden_layers * args.num_key_value_heads * max_seq_len * args.head_dim
                * kv_bytes_per_value)
    manifest = {
        "format": "qwen-edge-bundle", "format_version": FORMAT_VERSION, "created_by": f"qwen-edge {__version__}",
        "versions": library_versions(target),
        "source_model": {"id": source_id, "config_sha256": config_sha256},
        "architecture": {name: getattr(args, name) for name in ARCHITECTURE_FIELDS},
        "target": target, "backend": backend, **({"profile": profile} if profile else {}),
        "quant": quant, "max_seq_len": max_seq_len,
        "kv_cache": {"layout": kv_layout, "dtype": kv_dtype,
                     "positions": max_seq_len, "bytes_at_max_context": kv_bytes},
        "entry_points": entry_points,
        "special_tokens": {"im_start": special.im_start, "im_end": special.im_end, "think_open": special.think_open,
                           "think_close": special.think_close, "endoftext": special.endoftext,
                           "eos": sorted(special.stop)},
        "thinking": {"stop_text": STOP_THINKING_TEXT, "stop_token_ids": tokenizer.encode(STOP_THINKING_TEXT)},
        "files": {str(p.relative_to(bundle_dir)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                  for p in sorted(bundle_dir.rglob("*")) if p.is_file() and p.name != MANIFEST},
    }
    errors = schema_errors(manifest)
    if errors:
        raise AssertionError(f"exporter wrote an invalid manifest: {errors}")
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
