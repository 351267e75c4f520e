"""verify: every bundle the exporter writes passes; each kind of tampering is caught with exit 1."""

import json
import os
import shutil

import pytest

from runtimes.verify import unsafe_path, verify
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from exporter.cli import main

    out = tmp_path_factory.mktemp("verify") / "tiny-onnx-int4"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(out)]) == 0
    return out


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def flip_byte(bundle):
    path = bundle / "model.onnx.data"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(bundle):
    path = bundle / "model.onnx.data"
    path.write_bytes(path.read_bytes()[:-10])


def symlink_out(bundle):
    outside = bundle.parent / "outside.json"
    shutil.copy(bundle / "tokenizer.json", outside)
    (bundle / "tokenizer.json").unlink()
    os.symlink(outside, bundle / "tokenizer.json")


def path_escape(bundle):
    (bundle.parent / "secret.txt").write_text("x")
    edit_manifest(bundle, lambda m: m["files"].update({"../secret.txt": {"sha256": "0" * 64, "bytes": 1}}))


TAMPERING = {
    "changed byte": (flip_byte, "does not match its sha256"),
    "truncated file": (truncate, "bytes, manifest says"),
    "missing file": (lambda b: (b / "tokenizer_config.json").unlink(), "tokenizer_config.json is missing"),
    "extra file": (lambda b: (b / "payload.so").write_bytes(b"\x7fELF"), "payload.so is not in the manifest"),
    "path escape": (path_escape, "leaves the bundle"),
    "absolute path": (lambda b: edit_manifest(b, lambda m: m["files"].update(
        {"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}})), "is absolute"),
    "symlink out": (symlink_out, "symbolic link"),
    "wrong version": (lambda b: edit_manifest(b, lambda m: m.update(format_version=2)), "format_version 2 is not 1"),
    "schema violation": (lambda b: edit_manifest(b, lambda m: m.pop("special_tokens")), "'special_tokens' is a required"),
    "manifest not JSON": (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
    "manifest missing": (lambda b: (b / "manifest.json").unlink(), "manifest.json is missing"),
    "entry point unlisted": (lambda b: edit_manifest(b, lambda m: m["entry_points"][0].update(file="other.onnx")),
                             "names 'other.onnx'"),
    "hash edited to match nothing": (lambda b: edit_manifest(b, lambda m: m["files"]["tokenizer.json"].update(
        sha256="f" * 64)), "tokenizer.json does not match its sha256"),
}


def test_an_exported_bundle_verifies_and_runs(good, capsys):
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(good))
    assert code == 0 and out.strip().endswith(")") and "OK; a short greedy generation ran" in out


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_caught(good, tmp_path, capsys, kind):
    bundle = tmp_path / "b"
    shutil.copytree(good, bundle)
    tamper, message = TAMPERING[kind]
    tamper(bundle)
    report = tmp_path / "v.json"
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--json", str(report))
    assert code == 1, out
    assert message in out, out
    result = json.loads(report.read_text())
    assert result["ok"] is False and any(message in p for p in result["problems"])
    assert all(line.startswith(str(bundle)) for line in out.strip().splitlines())  # one line per problem


def test_a_model_that_cannot_run_is_bad(good, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(good, bundle)
    (bundle / "model.onnx").write_bytes(b"not a model")  # and a manifest updated to match: only running catches it
    from runtimes.bundle import sha256_file

    edit_manifest(bundle, lambda m: m["files"]["model.onnx"].update(
        sha256=sha256_file(bundle / "model.onnx"), bytes=(bundle / "model.onnx").stat().st_size))
    assert run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")[0] == 0
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle))
    assert code == 1 and "the backend cannot load the bundle" in out


def test_usage_errors_exit_2(capsys, tmp_path):
    assert run_cli(capsys, "verify")[0] == 2
    code, _, err = run_cli(capsys, "verify", "--bundle", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err


@pytest.mark.parametrize("name, bad", [("model.onnx", False), ("a/b.bin", False), ("../x", True), ("/x", True),
                                       ("a/../../x", True), ("a\\..\\x", True), ("", True), ("./x", True)])
def test_unsafe_paths(name, bad):
    assert (unsafe_path(name) is not None) == bad
