"""The export step that adds a bundle's reference fixture (runtimes/fixture.py): one call, after the target wrote
its files and manifest, the same for every target."""

from __future__ import annotations

import sys
from pathlib import Path

from exporter.bundle import store_manifest
from runtimes.errors import UserError
from runtimes.files import sha256_file
from runtimes.fixture import FIXTURE_FILE, dumps, record, summary
from runtimes.memory import check_memory, model_need
from runtimes.quiet import stage
from runtimes.reference import bundle_reference
from runtimes.tokenizer import QwenTokenizer


def add_reference_fixture(bundle_dir: Path, manifest: dict) -> dict:
    """Run the bundle's parity reference on the fixture's cases, write reference_fixture.json, list and hash it in
    the manifest (whose `fixture` records it) → the manifest as rewritten. A context too short for every case's
    prompt (a few dozen tokens) gets no fixture, and its manifest no record; so does an export on a machine where
    the fp32 reference does not fit beside the export (a 4B model's is ~16 GB): the bundle is written all the same,
    and verify then says its numbers were not checked."""
    try:
        check_memory(model_need(manifest["architecture"], manifest["max_seq_len"]), "the reference fixture's fp32 "
                     "model", "the bundle is written without a fixture")
    except UserError as exc:
        print(f"note: {exc}", file=sys.stderr)
        return manifest
    with stage(f"{manifest['target']}: writing the reference fixture"):
        reference, name = bundle_reference(manifest, None, bundle_dir)
        fixture = record(reference, QwenTokenizer(bundle_dir), name, manifest)
        if fixture is None:
            return manifest
        path = bundle_dir / FIXTURE_FILE
        path.write_bytes(dumps(fixture))
    files = {**manifest["files"], FIXTURE_FILE: {"sha256": sha256_file(path), "bytes": path.stat().st_size}}
    manifest = {**{k: v for k, v in manifest.items() if k != "files"}, "fixture": summary(fixture),
                "files": dict(sorted(files.items()))}
    store_manifest(bundle_dir, manifest)
    return manifest
