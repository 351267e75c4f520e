"""Writing a bundle's tokenizer files and its manifest (with the digest that protects it)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from exporter import __version__
from runtimes.bundle import DIGEST_FILE, FORMAT_VERSION, KV_BYTES, MANIFEST, manifest_digest_line, schema_errors
from runtimes.checkpoint import load_config
from runtimes.errors import UserError
from runtimes.files import sha256_file
from runtimes.sampling import read_generation_config
from runtimes.thinking import STOP_THINKING_TEXT
from runtimes.tokenizer import TOKENIZER_FILES, QwenTokenizer, check_token_ids

ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings")


def copy_tokenizer_files(model_dir: Path, bundle_dir: Path) -> None:
    """The checkpoint's tokenizer and generation config, checked first (a bundle must not carry a file its
    runtimes then reject)."""
    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir} has no tokenizer.json, and a bundle needs one for chat; "
                        "copy the checkpoint's tokenizer files next to its config.json")
    # its problems named in the user's checkpoint, not in our temp dir
    check_token_ids(QwenTokenizer(model_dir), load_config(model_dir)["vocab_size"], read_generation_config(model_dir),
                    model_dir)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, bundle_dir / name)


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """The tool and the libraries that shaped this bundle's bytes (same versions + same inputs = same bundle)."""
    versions = {}
    for name in ("qwen-edge", "torch", "numpy", "safetensors", "tokenizers", *libraries):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def kv_cache_bytes(args, positions: int, bytes_per_value: int) -> int:
    """A full KV cache: keys and values of every layer, kv_heads x head_dim values per position."""
    return 2 * args.num_hidden_layers * args.num_key_value_heads * args.head_dim * positions * bytes_per_value


@dataclass(frozen=True)
class BundleFacts:
    """What a manifest records beside the file table. `args` is the module's ModelArgs; `tokenizer` a runtimes
    QwenTokenizer of the bundle; `libraries` the target's (library_versions); `extra` the top-level fields a
    target adds (the onnx npu profile's "npu" and "qnn")."""
    source_id: str
    config_sha256: str
    args: Any
    target: str
    backend: str
    quant: dict
    max_seq_len: int
    kv_dtype: str
    kv_layout: str
    entry_points: list[dict]
    tokenizer: Any
    libraries: tuple[str, ...] = ()
    profile: str | None = None
    extra: dict = field(default_factory=dict)


def write_manifest(bundle_dir: Path, facts: BundleFacts) -> dict:
    """Hash every file already in `bundle_dir`, then write a schema-checked manifest.json beside them."""
    f, args = facts, facts.args
    special = f.tokenizer.special
    kv_bytes = kv_cache_bytes(args, f.max_seq_len, KV_BYTES[f.kv_dtype])
    manifest = {
        "format": "qwen-edge-bundle", "format_version": FORMAT_VERSION, "created_by": f"qwen-edge {__version__}",
        "versions": library_versions(f.libraries),
        "source_model": {"id": f.source_id, "config_sha256": f.config_sha256},
        "architecture": {**{name: getattr(args, name) for name in ARCHITECTURE_FIELDS},
                         **({"rope_scaling": args.rope_scaling.manifest()} if args.rope_scaling else {})},
        "target": f.target, "backend": f.backend, **({"profile": f.profile} if f.profile else {}),
        "quant": f.quant, "max_seq_len": f.max_seq_len,
        "kv_cache": {"layout": f.kv_layout, "dtype": f.kv_dtype,
                     "positions": f.max_seq_len, "bytes_at_max_context": kv_bytes},
        "entry_points": f.entry_points, **f.extra,
        "special_tokens": {"im_start": special.im_start, "im_end": special.im_end, "think_open": special.think_open,
                           "think_close": special.think_close, "endoftext": special.endoftext,
                           "eos": sorted(special.stop)},
        "thinking": {"stop_text": STOP_THINKING_TEXT, "stop_token_ids": f.tokenizer.encode(STOP_THINKING_TEXT)},
        # qwen3: the apps render it with their own code; checkpoint: only the template itself renders it
        "chat_template": "checkpoint" if f.tokenizer.own_template else "qwen3",
        "files": {str(p.relative_to(bundle_dir)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                  for p in sorted(bundle_dir.rglob("*")) if p.is_file() and p.name not in (MANIFEST, DIGEST_FILE)},
    }
    store_manifest(bundle_dir, manifest)
    return manifest


def store_manifest(bundle_dir: Path, manifest: dict) -> None:
    """Write a schema-checked manifest.json and its digest (again, after a file is added to a written bundle)."""
    errors = schema_errors(manifest)
    if errors:
        raise AssertionError(f"exporter wrote an invalid manifest: {errors}")
    text = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    (bundle_dir / MANIFEST).write_bytes(text)
    (bundle_dir / DIGEST_FILE).write_text(manifest_digest_line(text))
