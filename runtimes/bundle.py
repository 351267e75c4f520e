"""Open an exported bundle: read and validate its manifest, check its files, pick its backend."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runtimes.errors import UserError

MANIFEST = "manifest.json"
SCHEMA_PATH = Path(__file__).parent / "manifest.schema.json"

# backend name in manifest.json → "module:class"; each target issue adds its backend here
BACKENDS: dict[str, str] = {"onnxruntime": "runtimes.backends.onnxruntime:OnnxRuntimeBackend",
                            "executorch": "runtimes.backends.executorch:ExecuTorchBackend",
                            "coreml": "runtimes.backends.coreml:CoreMLBackend"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def schema_errors(manifest: dict) -> list[str]:
    """Every way `manifest` breaks the JSON Schema, as 'path: message' lines (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


def verify_files(bundle: str | Path, manifest: dict) -> list[str]:
    """Files that are missing or whose sha256 differs from the manifest's."""
    problems = []
    for name, entry in manifest["files"].items():
        path = Path(bundle) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256")
    return problems


def read_manifest(bundle: str | Path) -> dict:
    manifest = _load_manifest(bundle)
    errors = schema_errors(manifest)
    if errors:
        raise UserError(f"{bundle}/{MANIFEST} is not a valid manifest ({errors[0]}); export the bundle again")
    return manifest


def _load_manifest(bundle: str | Path) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise UserError(f"{bundle} is not a qwen-edge bundle (no manifest.json); "
                        "write one with python -m exporter --target ... --out DIR")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); export the bundle again") from None


def load_backend(bundle: str | Path, **options):
    manifest = read_manifest(bundle)
    name = manifest.get("backend")
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS)) or "none yet"
        raise UserError(f"{bundle} needs backend {name!r}, which this runtime does not have (available: {known})")
    import importlib

    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls).from_bundle(Path(bundle), manifest, **options)
