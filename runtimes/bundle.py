"""Open an exported bundle: read its manifest and pick the backend it names."""

from __future__ import annotations

import json
from pathlib import Path

from runtimes.errors import UserError

# backend name in manifest.json → "module:class"; each target issue adds its backend here
BACKENDS: dict[str, str] = {}


def read_manifest(bundle: str | Path) -> dict:
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{bundle} is not a qwen-edge bundle (no manifest.json); "
                        "write one with python -m exporter --target ... --out DIR")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); export the bundle again") from None


def load_backend(bundle: str | Path):
    manifest = read_manifest(bundle)
    name = manifest.get("backend")
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS)) or "none yet"
        raise UserError(f"{bundle} needs backend {name!r}, which this runtime does not have (available: {known})")
    import importlib

    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls).from_bundle(Path(bundle), manifest)
