"""The bundle contract: what a bundle directory must hold, checked the same way before every use.

A bundle is its artifact file(s), the tokenizer files and `manifest.json` (fields: `manifest.schema.json`), plus
`manifest.sha256`, one `sha256sum` line over the manifest's own bytes. Every file but those two is listed in the
manifest with its size and sha256. `check_bundle` finds every way a directory breaks this, each problem with a
code from PROBLEM_CODES (the Android and iOS verifiers report the same codes, checked by tests/golden/tamper.json);
`read_manifest` is the gate every command passes before it loads a bundle.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import jsonschema

from runtimes.errors import UserError
from runtimes.files import JSON_LIMIT, input_dir, regular_file, sha256_file
from runtimes.memory import bundle_need, check_memory
from runtimes.sampling import read_generation_config
from runtimes.tokenizer import QwenTokenizer, token_id_problems

MANIFEST = "manifest.json"
DIGEST_FILE = "manifest.sha256"
FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "manifest.schema.json"
KV_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}

PROBLEM_CODES = {
    "manifest_missing": "manifest.json is absent",
    "manifest_invalid": "manifest.json is not a JSON object",
    "manifest_digest": "manifest.sha256 is absent or does not match manifest.json's bytes",
    "schema": "a manifest field is missing, of the wrong type, out of range or inconsistent",
    "format_version": "the manifest's format version is not the one this tool reads",
    "unsafe_path": "a listed path is absolute, has '..' or empty parts, or a backslash",
    "symlink": "a symbolic link in the bundle",
    "not_regular": "a FIFO, socket or device in the bundle",
    "missing_file": "a listed file is absent",
    "size": "a file's size differs from the manifest's",
    "sha256": "a file's sha256 differs from the manifest's",
    "extra_file": "a file the manifest does not list",
    "entry_point": "an entry point names a file the manifest does not list",
    "generation_config": "generation_config.json is malformed or out of range",
    "weights": "a stored weight is NaN or infinite (verify reads ONNX initializers, .npy and .safetensors files)",
    "backend": "the bundle's entry points failed to load or run (verify without --no-run)",
    "fixture": "the reference fixture is malformed, or the bundle's runtime fails it (verify without --no-run)",
}

# backend name in manifest.json → "module:class"
BACKENDS: dict[str, str] = {"onnxruntime": "runtimes.backends.onnxruntime:OnnxRuntimeBackend",
                            "executorch": "runtimes.backends.executorch:ExecuTorchBackend",
                            "coreml": "runtimes.backends.coreml:CoreMLBackend"}


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


def manifest_digest_line(manifest_bytes: bytes) -> str:
    """manifest.sha256's content: `sha256sum manifest.json` output, so `sha256sum -c` checks it too."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n"


def schema_errors(manifest: dict) -> list[str]:
    """Every way `manifest` breaks the JSON Schema, as 'path: message' lines (empty when valid)."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


def consistency_errors(manifest: dict) -> list[str]:
    """What the schema cannot say: the KV cache's numbers agree with the architecture and context, so a runtime
    can trust them before it allocates anything."""
    arch, kv = manifest["architecture"], manifest["kv_cache"]
    errors = []
    if kv["positions"] != manifest["max_seq_len"]:
        errors.append(f"kv_cache/positions {kv['positions']} is not max_seq_len {manifest['max_seq_len']}")
    expected = (2 * arch["num_hidden_layers"] * arch["num_key_value_heads"] * kv["positions"] * arch["head_dim"]
                * KV_BYTES.get(kv["dtype"], 4))
    if kv["bytes_at_max_context"] != expected:
        errors.append(f"kv_cache/bytes_at_max_context {kv['bytes_at_max_context']} is not the {expected} its "
                      "architecture, dtype and positions make")
    if arch["num_attention_heads"] % arch["num_key_value_heads"]:
        errors.append("architecture: num_attention_heads is not a multiple of num_key_value_heads")
    special = manifest["special_tokens"]
    ids = {**{f"special_tokens/{k}": v for k, v in special.items() if k != "eos"},
           **{f"special_tokens/eos/{i}": v for i, v in enumerate(special["eos"])},
           **{f"thinking/stop_token_ids/{i}": v for i, v in enumerate(manifest["thinking"]["stop_token_ids"])}}
    errors += [f"{name} {value} is past the embedding's {arch['vocab_size']} rows (architecture/vocab_size)"
               for name, value in ids.items() if value >= arch["vocab_size"]]
    return errors


def token_problems(bundle: Path, manifest: dict) -> list[Problem]:
    """The bundle's tokenizer against its embedding (runtimes.tokenizer.token_id_problems) and against the
    manifest's special tokens, which the apps use without reading the tokenizer."""
    try:
        tokenizer = QwenTokenizer(bundle)
    except UserError as exc:
        return [Problem("schema", f"tokenizer: {exc}")]
    problems = [Problem("schema", f"{message} (architecture/vocab_size)") for message in
                token_id_problems(tokenizer, manifest["architecture"]["vocab_size"], read_generation_config(bundle))]
    special = manifest["special_tokens"]
    for name, value in asdict(tokenizer.special).items():
        if special[name] != value:
            problems.append(Problem("schema", f"manifest: special_tokens/{name} is {special[name]}, but tokenizer.json "
                                              f"gives {value}"))
    return problems


def unsafe_path(name: str) -> str | None:
    """Why a manifest file name could leave the bundle, or None: relative POSIX paths inside it only."""
    if not name or "\\" in name or "\x00" in name:
        return "is not a plain relative path"
    if PurePosixPath(name).is_absolute() or name.startswith("~"):
        return "is absolute"
    if any(part in ("..", ".", "") for part in name.split("/")):
        return "leaves the bundle (.. or empty parts)"
    return None


def _walk(bundle: Path) -> list[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of everything under bundle, never following a link."""
    found = []
    for root, dirs, files in os.walk(bundle, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            found.append((path.relative_to(bundle).as_posix(), path.lstat()))
    return sorted(found)


def _head(path: Path, limit: int = 256) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _strict_object(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is beyond a double")
    return value


def parse_manifest(data: bytes):
    """RFC 8259 JSON and nothing looser, as the apps' parsers read it: no NaN or Infinity, no number beyond a
    double, no duplicate keys, no byte order mark, no lone surrogates."""
    def constant(name):
        raise ValueError(f"{name} is not JSON")

    text = data.decode("utf-8")  # a byte order mark stays a character, which json refuses
    value = json.loads(text, object_pairs_hook=_strict_object, parse_constant=constant, parse_float=_finite)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def _check_manifest(bundle: Path, problems: list[Problem]) -> dict | None:
    """The manifest, if the files and schema may be checked against it; otherwise None (the problems say why).
    Past a missing, unreadable or invalid manifest, a wrong format version or a schema error nothing else is
    checked: there is no contract to check the files against. The digest is checked whenever the manifest's bytes
    can be read."""
    path = bundle / MANIFEST
    if path.is_symlink():
        problems.append(Problem("symlink", f"{MANIFEST} is a symbolic link"))
        return None
    if not path.exists():
        problems.append(Problem("manifest_missing", f"{MANIFEST} is missing: not a qwen-edge bundle"))
        return None
    if not regular_file(path):
        problems.append(Problem("not_regular", f"{MANIFEST} is not a regular file (a FIFO, socket or device)"))
        return None
    if path.stat().st_size > JSON_LIMIT:
        problems.append(Problem("manifest_invalid", f"{MANIFEST} is larger than any manifest"))
        return None
    data = path.read_bytes()
    manifest, invalid = None, None
    try:
        manifest = parse_manifest(data)
    except (ValueError, RecursionError, UnicodeError) as exc:
        invalid = Problem("manifest_invalid", f"{MANIFEST} is not valid JSON ({exc})")
    digest = bundle / DIGEST_FILE
    if not regular_file(digest):
        digest_problem = Problem("manifest_digest", f"{DIGEST_FILE} is missing or not a regular file, so the "
                                                    "manifest is unprotected")
    elif _head(digest) != manifest_digest_line(data).encode():
        digest_problem = Problem("manifest_digest", f"{MANIFEST} does not match {DIGEST_FILE} (edited after export)")
    else:
        digest_problem = None
    problems += [p for p in (invalid, digest_problem) if p]  # the more fundamental first
    if invalid:
        return None
    if not isinstance(manifest, dict):
        problems.append(Problem("manifest_invalid", f"{MANIFEST} is not a JSON object"))
        return None
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        problems.append(Problem("format_version", f"format_version {version!r} is not {FORMAT_VERSION}, the version "
                                                  "this tool reads; export the bundle again with this version"))
        return None
    errors = schema_errors(manifest) or consistency_errors(manifest)
    if errors:
        problems += [Problem("schema", f"manifest: {e}") for e in errors]
        return None
    return manifest


def check_files(bundle: Path, manifest: dict) -> list[Problem]:
    """The files against the manifest's table, and nothing in the bundle but them (the manifest, its digest and
    the directories that hold listed files aside)."""
    problems = []
    root = bundle.resolve()
    files = manifest.get("files")
    if not isinstance(files, dict):
        return [Problem("schema", "manifest has no files table")]
    on_disk = dict(_walk(bundle))
    for name, entry in sorted(files.items()):
        why = unsafe_path(name)
        if why:
            problems.append(Problem("unsafe_path", f"file {name!r} {why}"))
            continue
        parts = PurePosixPath(name).parts
        if any(stat.S_ISLNK(on_disk[p].st_mode) for p in ("/".join(parts[:i + 1]) for i in range(len(parts)))
               if p in on_disk):
            problems.append(Problem("symlink", f"{name} is or passes through a symbolic link (a bundle holds real "
                                               "files only)"))
            continue
        if not (bundle / name).resolve().is_relative_to(root):
            problems.append(Problem("unsafe_path", f"{name} resolves outside the bundle"))
            continue
        info = on_disk.get(name)
        if info is None or stat.S_ISDIR(info.st_mode):
            problems.append(Problem("missing_file", f"{name} is missing" + (" (a directory is there)" if info else "")))
            continue
        if not stat.S_ISREG(info.st_mode):
            continue  # reported below with everything else that is not a regular file
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or "sha256" not in entry:
            continue  # the schema check reports the malformed entry
        if info.st_size != entry["bytes"]:
            problems.append(Problem("size", f"{name} has {info.st_size} bytes, manifest says {entry['bytes']}"))
        elif sha256_file(bundle / name) != entry["sha256"]:
            problems.append(Problem("sha256", f"{name} does not match its sha256 (changed after export)"))
    for rel, info in on_disk.items():  # (directories are not files: an empty one is harmless)
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            if rel not in files:
                problems.append(Problem("symlink", f"{rel} is a symbolic link not in the manifest"))
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            problems.append(Problem("not_regular", f"{rel} is not a regular file (a FIFO, socket or device)"))
        elif stat.S_ISREG(mode) and rel not in files and rel not in (MANIFEST, DIGEST_FILE):
            problems.append(Problem("extra_file", f"{rel} is not in the manifest (extra file)"))
    for entry in manifest.get("entry_points") or []:
        target = entry.get("file", "") if isinstance(entry, dict) else ""
        if target not in files and not any(name.startswith(f"{target}/") for name in files):
            name = entry.get("name", "?") if isinstance(entry, dict) else entry
            problems.append(Problem("entry_point", f"entry point {name!r} names {target!r}, which the manifest does "
                                                   "not list"))
    return problems


def check_bundle(bundle: str | Path) -> tuple[dict | None, list[Problem]]:
    """(the manifest if it could be read, every problem found): `verify --no-run`."""
    bundle = input_dir(bundle, "bundle", "pass a bundle written by python -m exporter --out DIR")
    problems: list[Problem] = []
    manifest = _check_manifest(bundle, problems)
    if manifest is not None:
        problems += check_files(bundle, manifest)
        if not any(p.code in ("missing_file", "symlink", "not_regular") for p in problems):
            try:
                read_generation_config(bundle)
            except UserError as exc:
                problems.append(Problem("generation_config", str(exc)))
        if not problems and "tokenizer.json" in manifest["files"]:
            problems += token_problems(bundle, manifest)
    return manifest, problems


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of a bundle that passes every check of `verify --no-run`; otherwise a UserError naming the
    first problem. Every command that loads a bundle comes through here."""
    manifest, problems = check_bundle(bundle)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{bundle} fails verification: {problems[0].message}{more}; run python -m exporter verify "
                        f"--bundle {bundle} for every problem, and export it again")
    return manifest


def load_backend(bundle: str | Path, manifest: dict | None = None, **options):
    """The bundle's backend, after read_manifest's checks (pass `manifest` when read_manifest gave it already)
    and a memory check."""
    manifest = manifest or read_manifest(bundle)
    name = manifest.get("backend")
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS)) or "none yet"
        raise UserError(f"{bundle} needs backend {name!r}, which this runtime does not have (available: {known})")
    check_memory(bundle_need(manifest), str(bundle), "export it with a smaller --max-seq-len (or a smaller --quant)")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls).from_bundle(Path(bundle), manifest, **options)
