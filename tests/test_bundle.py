"""The bundle manifest: written by the exporter, checked against the JSON Schema, read by runtimes."""

import json

import pytest

from exporter.bundle import BundleFacts, copy_tokenizer_files, write_manifest
from runtimes.checkpoint import load_config, resolve_model_dir
from runtimes.model import ModelArgs
from runtimes.checkpoint import config_sha256
from runtimes.bundle import load_backend, read_manifest, schema_errors, check_files
from runtimes.errors import UserError
from runtimes.thinking import STOP_THINKING_TEXT
from runtimes.tokenizer import QwenTokenizer

TINY = resolve_model_dir("tiny")
ENTRY = [{"name": "forward", "file": "model.bin",  # not a real model: loading it must fail cleanly
          "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, "sequence"]}],
          "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, "sequence", 394]}]}]


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00" * 1000)
    copy_tokenizer_files(TINY, tmp_path)
    config = load_config(TINY)
    manifest = write_manifest(tmp_path, BundleFacts(
        source_id="tiny", config_sha256=config_sha256(config), args=ModelArgs.from_config(config), target="onnx",
        backend="onnxruntime", quant={"name": "fp32", "method": "none", "bits": 32}, max_seq_len=256,
        kv_dtype="float32", kv_layout="[1, kv_heads, positions, head_dim]", entry_points=ENTRY,
        tokenizer=QwenTokenizer(tmp_path)))
    return tmp_path, manifest


def write_manifest_json(directory, manifest):
    """A manifest edited by hand, with the digest brought up to date (only the edit itself is under test)."""
    from runtimes.bundle import manifest_digest_line

    text = json.dumps(manifest).encode()
    (directory / "manifest.json").write_bytes(text)
    (directory / "manifest.sha256").write_text(manifest_digest_line(text))


def test_manifest_is_complete_and_valid(bundle):
    directory, written = bundle
    manifest = read_manifest(directory)
    assert manifest == written and schema_errors(manifest) == []
    assert set(manifest["files"]) == {"model.bin", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert manifest["thinking"]["stop_text"] == STOP_THINKING_TEXT
    tok = QwenTokenizer(directory)
    assert manifest["thinking"]["stop_token_ids"] == tok.encode(STOP_THINKING_TEXT)
    assert manifest["special_tokens"]["think_close"] == tok.special.think_close
    # 4 layers x (k, v) x 2 kv heads x 256 positions x head_dim 32 x 4 bytes
    assert manifest["kv_cache"]["bytes_at_max_context"] == 4 * 2 * 2 * 256 * 32 * 4
    assert check_files(directory, manifest) == []


def test_tampered_or_missing_files_are_reported(bundle):
    directory, manifest = bundle
    (directory / "model.bin").write_bytes(b"\x01" * 1000)
    (directory / "tokenizer_config.json").unlink()
    assert [(p.code, p.message) for p in check_files(directory, manifest)] == [
        ("sha256", "model.bin does not match its sha256 (changed after export)"),
        ("missing_file", "tokenizer_config.json is missing")]


def test_invalid_manifest_is_a_user_error(bundle):
    directory, manifest = bundle
    broken = {k: v for k, v in manifest.items() if k != "thinking"}
    broken["max_seq_len"] = 0
    write_manifest_json(directory, broken)
    errors = schema_errors(broken)
    assert any("thinking" in e for e in errors) and any(e.startswith("max_seq_len") for e in errors)
    with pytest.raises(UserError, match="fails verification: manifest: .*thinking.* is a required property "
                                        "\\(and 1 more\\)"):
        read_manifest(directory)
    (directory / "manifest.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(directory)


def test_unknown_backend(bundle):
    directory, manifest = bundle
    write_manifest_json(directory, {**manifest, "target": "reference", "backend": "reference"})
    with pytest.raises(UserError, match="needs backend 'reference'"):
        load_backend(directory)


def test_corrupt_artifact_is_a_user_error(bundle, capsys):
    from tests.conftest import run_cli

    directory, _ = bundle  # its "model" is 1000 zero bytes
    code, _, err = run_cli(capsys, "chat", "--bundle", str(directory), "hi")
    assert code == 2 and "ONNX Runtime cannot load" in err and len(err.strip().splitlines()) == 1


def test_the_kv_cache_table_in_the_docs_is_the_manifests_formula():
    from exporter.bundle import kv_cache_bytes
    from exporter.make_model import SHAPES
    from tests.conftest import ROOT

    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:-1]]
            for line in (ROOT / "docs" / "bundle.md").read_text().splitlines() if line.startswith("| Qwen3-")}
    for name in ("0.6b", "1.7b", "4b"):
        args = ModelArgs.from_config(SHAPES[name])
        expected = [round(kv_cache_bytes(args, positions, width) / 1e6) for positions in (4096, 8192)
                    for width in (1, 2, 4)]
        assert rows[f"Qwen3-{name.upper()}"] == expected


def test_a_default_export_holds_4096_positions_and_prints_its_kv_cache(capsys, tmp_path, small_checkpoint):
    """The 0.6B shape's config (max_position_embeddings 40960) at small sizes: the default context is 4096."""
    from tests.conftest import copy_checkpoint, run_cli

    model = copy_checkpoint(small_checkpoint, tmp_path / "m")
    copy_tokenizer_files(TINY, model)  # its 382 ids fit the shape's 512
    code, out, err = run_cli(capsys, "--model", str(model), "--target", "onnx", "--quant", "fp32",
                             "--out", str(tmp_path / "b"))
    assert code == 0, err
    manifest = read_manifest(tmp_path / "b")
    args = ModelArgs.from_config(load_config(small_checkpoint))
    assert manifest["max_seq_len"] == 4096 and manifest["kv_cache"]["positions"] == 4096
    assert manifest["kv_cache"]["bytes_at_max_context"] == 2 * 2 * 2 * 16 * 4096 * 4 == \
        2 * args.num_hidden_layers * args.num_key_value_heads * args.head_dim * 4096 * 4
    assert "KV cache at 4096 positions: onnx (cpu) 2.1 MB (float32)" in out
