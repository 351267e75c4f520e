"""Hostile and broken inputs: one line, exit 2, nothing written. Killed and starved exports leave nothing
half-written. Parsers are fuzzed with hypothesis (bounded to keep the suite fast)."""

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.checkpoint import validate_config
from runtimes.bundle import schema_errors
from runtimes.errors import UserError
from tests.conftest import ROOT, copy_checkpoint, run_cli, run_module


def export_fails(capsys, model_dir, tmp_path, message, quant="fp32"):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--model", str(model_dir), "--target", "onnx", "--quant", quant, "--out", str(out))
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def lying_safetensors(header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


LYING_HEADERS = dict([
    ("length past the file", lying_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                               b"\0" * 8, header_len=10_000)),
    ("huge header", lying_safetensors(b"{}", header_len=1 << 40)),
    ("offsets out of range", lying_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1 << 30]}},
                                               b"\0" * 8)),
    ("overlapping offsets", lying_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                                              b"\0" * 12)),
    ("shape disagrees with bytes", lying_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
                                                     b"\0" * 8)),
    ("header not JSON", lying_safetensors(b"{nope", b"")),
])


@pytest.mark.parametrize("kind", sorted(LYING_HEADERS))
def test_lying_safetensors_header(capsys, tmp_path, small_checkpoint, kind):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (model_dir / "model.safetensors").write_bytes(LYING_HEADERS[kind])
    export_fails(capsys, model_dir, tmp_path, "model.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights(capsys, tmp_path, small_checkpoint, value):
    from safetensors.torch import load_file, save_file

    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    tensors = load_file(model_dir / "model.safetensors")
    name = sorted(tensors)[3]
    tensors[name].view(-1)[7] = value
    save_file(tensors, model_dir / "model.safetensors")
    export_fails(capsys, model_dir, tmp_path, f"tensor {name} holds NaN or infinite values")


def test_non_finite_weight_read_lazily(capsys, tmp_path, small_checkpoint):
    """An int4 export reads each linear only when it quantizes it: a damaged one is still caught, cleanly."""
    from safetensors.torch import load_file, save_file

    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    tensors = load_file(model_dir / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name].view(-1)[5] = float("nan")
    save_file(tensors, model_dir / "model.safetensors")
    export_fails(capsys, model_dir, tmp_path, f"tensor {name} holds NaN or infinite values", quant="int4")


@pytest.mark.parametrize("changes, phrase", [
    ({"vocab_size": 0}, "vocab_size is 0"),
    ({"hidden_size": -64}, "hidden_size is -64"),
    ({"num_hidden_layers": "2"}, "num_hidden_layers is '2'"),
    ({"num_key_value_heads": 0}, "num_key_value_heads is 0"),
    ({"num_attention_heads": 3}, "multiple of num_key_value_heads"),
    ({"vocab_size": 10 ** 12}, "vocab_size is 1000000000000"),
    ({"head_dim": 15}, "head_dim must be even"),
    ({"head_dim": 24}, "does not match"),  # weights were made with head_dim 16
    ({"rms_norm_eps": -1}, "rms_norm_eps is -1"),
    ({"num_hidden_layers": True}, "num_hidden_layers is True"),
])
def test_absurd_config(capsys, tmp_path, small_checkpoint, changes, phrase):
    from tests.conftest import edit_config

    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    edit_config(model_dir, **changes)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--model", str(model_dir), "--target", "onnx", "--quant", "fp32", "--out", str(out))
    assert code == 2 and "Traceback" not in err, err
    assert phrase in err or (phrase == "does not match" and "config.json implies" in err), err
    assert not out.exists()


@pytest.mark.parametrize("name, content, phrase", [
    ("tokenizer.json", "{broken", "tokenizer.json cannot be read"),
    ("tokenizer_config.json", "{broken", "tokenizer_config.json is not valid JSON"),
    ("tokenizer_config.json", json.dumps({"chat_template": "{% for m in messages %}{{ m.content "}),
     "chat template fails to render"),
    ("tokenizer_config.json", json.dumps({"chat_template": "{{ raise_exception('no system role') }}"}),
     "no system role"),
    ("tokenizer_config.json", json.dumps({"chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}),
     "chat template fails to render"),  # the sandbox refuses to reach Python objects
])
def test_broken_tokenizer_files(capsys, tmp_path, name, content, phrase):
    from exporter.checkpoint import resolve_model_dir

    model_dir = copy_checkpoint(resolve_model_dir("tiny"), tmp_path / "m")
    (model_dir / name).write_text(content)
    export_fails(capsys, model_dir, tmp_path, phrase)


def test_malformed_calibration_jsonl_names_the_line(capsys, tmp_path):
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n')
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--quant", "awq-int4", "--calib",
                           str(calib), "--out", str(out))
    assert code == 2 and "calib.jsonl:3:" in err
    assert not out.exists()


# ---- fuzzing the parsers: never a traceback, only UserError or acceptance --------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=True)
                           | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)
CONFIG_KEYS = ["model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
               "rope_scaling", "torch_dtype", "hidden_act", "use_sliding_window", "max_position_embeddings"]
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values | st.integers(0, 4096), max_size=len(CONFIG_KEYS)))
def test_fuzz_config(config):
    config = {"model_type": "qwen3", **config}
    try:
        validate_config(config)
    except UserError:
        return
    from exporter.model import ModelArgs

    ModelArgs.from_config(config)  # accepted configs build the module's arguments


@fuzz
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_fuzz_manifest(fields):
    errors = schema_errors(fields)
    assert isinstance(errors, list) and errors  # random objects are never valid manifests, and never crash


@fuzz
@given(st.lists(st.text(max_size=40) | json_values.map(json.dumps), max_size=6))
def test_fuzz_calibration_jsonl(lines):
    import tempfile
    from pathlib import Path

    from calibration.datasets import read_texts

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.jsonl"
        path.write_text("\n".join(lines))
        try:
            texts = read_texts(str(path))
        except UserError:
            return
        assert all(isinstance(t, str) for t in texts)


# ---- killed, starved and failing exports ------------------------------------------------------------------------

def export_process(out, *extra, preexec=None):
    # AWQ on tiny runs ~20 s: long enough to be killed while loading, calibrating and writing
    return subprocess.Popen([sys.executable, "-m", "exporter", "--model", "tiny", "--target", "onnx", "--quant",
                             "awq-int4", "--out", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


@pytest.mark.slow
@pytest.mark.parametrize("signum, after", [(signal.SIGKILL, 2.0), (signal.SIGKILL, 8.0), (signal.SIGINT, 5.0)])
def test_killed_export_leaves_nothing_half_written(tmp_path, signum, after):
    from runtimes.verify import verify

    out = tmp_path / "bundle"
    proc = export_process(out)
    time.sleep(after)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    assert not out.exists() or verify(out, run=False)["ok"]
    if signum == signal.SIGINT:
        assert not list(tmp_path.glob(".bundle.partial-*"))  # it unwound and cleaned up
    # whatever a SIGKILL left behind is removed by the next run for the same --out
    proc = run_module("--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob(".bundle.partial-*")) and verify(out, run=False)["ok"]


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    limit = 300_000  # bytes per file: the tokenizer fits, the model does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "exporter", "--model", "tiny", "--target", "onnx", "--quant", "fp32",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr
    assert "out of disk space" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_a_target_failing_late_leaves_nothing(capsys, tmp_path, monkeypatch):
    import exporter.targets.onnx as onnx_target

    def fail_after_writing(module, weights, out_dir, *args, **kwargs):
        (out_dir / "model.onnx").write_bytes(b"half")
        raise UserError("the target failed at the very end")

    monkeypatch.setattr(onnx_target, "export_onnx", fail_after_writing)
    out = tmp_path / "bundle"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(out))
    assert code == 2 and "failed at the very end" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    from exporter.bundle import atomic_output_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".bundle.partial-{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    other = tmp_path / f".bundle.partial-{os.getpid()}-live"  # this process is alive: kept
    other.mkdir()
    with atomic_output_dir(tmp_path / "bundle") as tmp:
        (tmp / "x").write_text("done")
    assert not stale.exists() and other.exists() and (tmp_path / "bundle" / "x").is_file()
