"""Verify a bundle before trusting it: manifest, every file, paths, the backend, a short generation.

Each check adds one line per problem; a bundle is good when there are none. The demo apps apply the same file
and path rules (their cores mirror this module), so a bundle that passes here is one they accept.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from runtimes.bundle import MANIFEST, schema_errors, sha256_file
from runtimes.errors import UserError

FORMAT_VERSION = 1


def unsafe_path(name: str) -> str | None:
    """Why a manifest file name could leave the bundle, or None: relative POSIX paths inside it only."""
    if not name or "\\" in name or "\x00" in name:
        return "is not a plain relative path"
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("~"):
        return "is absolute"
    if any(part in ("..", ".", "") for part in name.split("/")):
        return "leaves the bundle (.. or empty parts)"
    return None


def _through_symlink(bundle: Path, name: str) -> bool:
    current = bundle
    for part in PurePosixPath(name).parts:
        current = current / part
        if current.is_symlink():
            return True
    return False


def check_files(bundle: Path, manifest: dict) -> list[str]:
    problems = []
    root = bundle.resolve()
    files = manifest.get("files")
    if not isinstance(files, dict):
        return ["manifest has no files table"]
    for name, entry in sorted(files.items()):
        why = unsafe_path(name)
        if why:
            problems.append(f"file {name!r} {why}")
            continue
        path = bundle / name
        if _through_symlink(bundle, name):
            problems.append(f"{name} is or passes through a symbolic link (a bundle holds real files only)")
            continue
        if not path.resolve().is_relative_to(root):
            problems.append(f"{name} resolves outside the bundle")
            continue
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        if not isinstance(entry, dict) or "bytes" not in entry or "sha256" not in entry:
            continue  # the schema check reports the malformed entry
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{name} has {size} bytes, manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 (changed after export)")
    listed = set(files)
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if path.is_symlink() and rel not in listed:
            problems.append(f"{rel} is a symbolic link not in the manifest")
        elif path.is_file() and rel != MANIFEST and rel not in listed:
            problems.append(f"{rel} is not in the manifest (extra file)")
    for entry in manifest.get("entry_points") or []:
        target = entry.get("file", "") if isinstance(entry, dict) else ""
        if target not in listed and not any(name.startswith(f"{target}/") for name in listed):
            problems.append(f"entry point {entry.get('name', '?') if isinstance(entry, dict) else entry!r} names "
                            f"{target!r}, which the manifest does not list")
    return problems


def verify(bundle: str | Path, run: bool = True, new_tokens: int = 8) -> dict:
    """→ {"bundle", "ok", "problems": [...], "notes": [...], "generation": text or None}."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise UserError(f"{bundle} is not a directory; pass a bundle written by python -m exporter --out DIR")
    problems: list[str] = []
    notes: list[str] = []
    path = bundle / MANIFEST
    manifest = None
    if path.is_symlink():
        problems.append(f"{MANIFEST} is a symbolic link")
    elif not path.is_file():
        problems.append(f"{MANIFEST} is missing: not a qwen-edge bundle")
    else:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{MANIFEST} is not valid JSON ({exc})")
    if manifest is not None and not isinstance(manifest, dict):
        problems.append(f"{MANIFEST} is not a JSON object")
        manifest = None
    if manifest is not None:
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            problems.append(f"format_version {version!r} is not {FORMAT_VERSION}, the version this tool reads; "
                            "export the bundle again with this version")
        problems += [f"manifest: {e}" for e in schema_errors(manifest)
                     if not e.startswith("format_version")]
        problems += check_files(bundle, manifest)
    generation = None
    if manifest is not None and not problems and run:
        generation = _generate(bundle, new_tokens, notes, problems)
    return {"bundle": str(bundle), "ok": not problems, "problems": problems, "notes": notes,
            "generation": generation}


def _generate(bundle: Path, new_tokens: int, notes: list[str], problems: list[str]) -> str | None:
    from runtimes.bundle import load_backend
    from runtimes.generate import run
    from runtimes.tokenizer import QwenTokenizer

    try:
        backend = load_backend(bundle)
    except UserError as exc:
        if "needs macOS" in str(exc) or "runs on the device" in str(exc) or "not installed" in str(exc):
            notes.append(f"entry points not run here: {exc}")
            return None
        problems.append(f"the backend cannot load the bundle: {exc}")
        return None
    try:
        tokenizer = QwenTokenizer(bundle)
        result = run(backend, tokenizer, [{"role": "user", "content": "What is 2 + 2?"}], budget=0,
                     max_new_tokens=new_tokens)
    except UserError as exc:
        problems.append(f"a short generation failed: {exc}")
        return None
    except Exception as exc:  # a bundle that loads but cannot run is bad, whatever the reason
        problems.append(f"a short generation failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return None
    if not result.token_ids:
        problems.append("a short generation produced no tokens")
    return result.content
