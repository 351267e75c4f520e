"""verify: every bundle the exporter writes passes; each kind of tampering is caught with exit 1."""

import json
import os
import shutil

import pytest

from runtimes.bundle import manifest_digest_line, unsafe_path

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from exporter.cli import main

    out = tmp_path_factory.mktemp("verify") / "tiny-onnx-int4"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(out)]) == 0
    return out


def edit_manifest(bundle, change, keep_digest=False):
    """Edit the manifest; the digest follows the edit unless keep_digest (then the edit itself is caught)."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    if not keep_digest:
        (bundle / "manifest.sha256").write_text(manifest_digest_line(path.read_bytes()))


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


def replace_file(bundle, name, text):
    """New content for a listed file, with the manifest's size and hash following (only the content is wrong)."""
    from runtimes.files import sha256_file

    (bundle / name).write_text(text)
    edit_manifest(bundle, lambda m: m["files"][name].update(sha256=sha256_file(bundle / name),
                                                            bytes=(bundle / name).stat().st_size))


TAMPERING = {  # kind: (tamper, the message's words, the problem code)
    "changed byte": (flip_byte, "does not match its sha256", "sha256"),
    "truncated file": (truncate, "bytes, manifest says", "size"),
    "missing file": (lambda b: (b / "tokenizer_config.json").unlink(), "tokenizer_config.json is missing",
                     "missing_file"),
    "extra file": (lambda b: (b / "payload.so").write_bytes(b"\x7fELF"), "payload.so is not in the manifest",
                   "extra_file"),
    "path escape": (path_escape, "leaves the bundle", "unsafe_path"),
    "absolute path": (lambda b: edit_manifest(b, lambda m: m["files"].update(
        {"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}})), "is absolute", "unsafe_path"),
    "symlink out": (symlink_out, "symbolic link", "symlink"),
    "wrong version": (lambda b: edit_manifest(b, lambda m: m.update(format_version=2)), "format_version 2 is not 1",
                      "format_version"),
    "schema violation": (lambda b: edit_manifest(b, lambda m: m.pop("special_tokens")),
                         "'special_tokens' is a required", "schema"),
    "manifest not JSON": (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON",
                          "manifest_invalid"),
    "manifest missing": (lambda b: (b / "manifest.json").unlink(), "manifest.json is missing", "manifest_missing"),
    "entry point unlisted": (lambda b: edit_manifest(b, lambda m: m["entry_points"][0].update(file="other.onnx")),
                             "names 'other.onnx'", "entry_point"),
    "hash edited to match nothing": (lambda b: edit_manifest(b, lambda m: m["files"]["tokenizer.json"].update(
        sha256="f" * 64)), "tokenizer.json does not match its sha256", "sha256"),
    "FIFO": (lambda b: os.mkfifo(b / "pipe"), "not a regular file", "not_regular"),
    "eos edited, digest kept": (lambda b: edit_manifest(b, lambda m: m["special_tokens"].update(eos=[0]),
                                                        keep_digest=True), "edited after export", "manifest_digest"),
    "digest missing": (lambda b: (b / "manifest.sha256").unlink(), "manifest.sha256 is missing", "manifest_digest"),
    "absurd context": (lambda b: edit_manifest(b, lambda m: m.update(max_seq_len=10 ** 9)),
                       "kv_cache/positions 512 is not max_seq_len 1000000000", "schema"),
    "generation config list": (lambda b: replace_file(b, "generation_config.json", "[1, 2]"),
                               "generation_config.json is not a JSON object", "generation_config"),
    "generation config hot": (lambda b: replace_file(b, "generation_config.json", '{"do_sample": true, '
                                                     '"temperature": "hot"}'), "temperature is 'hot'",
                              "generation_config"),
}


def test_an_exported_bundle_verifies_and_runs(good, capsys):
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(good))
    assert code == 0 and "OK; a short greedy generation ran" in out, out
    assert out.strip().splitlines()[-1].startswith(f"{good}: reference fixture passed")


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_caught(good, tmp_path, capsys, kind):
    bundle = tmp_path / "b"
    shutil.copytree(good, bundle)
    tamper, message, problem = TAMPERING[kind]
    tamper(bundle)
    report = tmp_path / "v.json"
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--json", str(report))
    assert code == 1, out
    assert message in out, out
    result = json.loads(report.read_text())
    assert result["ok"] is False and any(message in p["message"] and p["code"] == problem for p in result["problems"])
    assert all(line.startswith(str(bundle)) for line in out.strip().splitlines())  # one line per problem
    # every command that loads a bundle refuses it the same way, before loading (exit 2, one line)
    code, _, err = run_cli(capsys, "chat", "--bundle", str(bundle), "What is 2 + 2?")
    assert code == 2 and "fails verification" in err and len(err.strip().splitlines()) == 1, err


def test_a_context_too_large_for_this_machine_is_refused_before_allocating(good, tmp_path, capsys):
    """A manifest whose numbers agree with each other but ask for a KV cache of ~60 GiB: nothing is allocated."""
    bundle = tmp_path / "b"
    shutil.copytree(good, bundle)
    positions = 10 ** 8

    def huge(m):
        m["max_seq_len"] = m["kv_cache"]["positions"] = positions
        m["kv_cache"]["bytes_at_max_context"] = m["kv_cache"]["bytes_at_max_context"] // 512 * positions
    edit_manifest(bundle, huge)
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle))
    assert code == 1 and f"KV cache at {positions} positions" in out and "GiB available here" in out, out
    code, _, err = run_cli(capsys, "chat", "--bundle", str(bundle), "hi")
    assert code == 2 and f"KV cache at {positions} positions" in err


def test_a_model_that_cannot_run_is_bad(good, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(good, bundle)
    (bundle / "model.onnx").write_bytes(b"not a model")  # and a manifest updated to match: only running catches it
    from runtimes.files import sha256_file

    edit_manifest(bundle, lambda m: m["files"]["model.onnx"].update(
        sha256=sha256_file(bundle / "model.onnx"), bytes=(bundle / "model.onnx").stat().st_size))
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 0 and "files and manifest OK; entry points not run (--no-run)" in out
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle))
    assert code == 1 and "the backend cannot load the bundle" in out


def test_usage_errors_exit_2(capsys, tmp_path):
    assert run_cli(capsys, "verify")[0] == 2
    code, _, err = run_cli(capsys, "verify", "--bundle", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("name, bad", [("model.onnx", False), ("a/b.bin", False), ("../x", True), ("/x", True),
                                       ("a/../../x", True), ("a\\..\\x", True), ("", True), ("./x", True)])
def test_unsafe_paths(name, bad):
    assert (unsafe_path(name) is not None) == bad
