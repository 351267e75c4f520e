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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtimes.checkpoint import validate_config
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
    from runtimes.checkpoint import resolve_model_dir

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
    from runtimes.model import ModelArgs

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

KILL_EXPORT = """
import os, sys
import exporter.bundle
import runtimes.quant.awq
where, signum = sys.argv[1], int(sys.argv[2])
def die(*args, **kwargs):
    os.kill(os.getpid(), signum)  # SIGKILL ends here; SIGINT unwinds from here
    raise AssertionError("the signal did not land")
if where == "quantizing":
    runtimes.quant.awq.awq_quantize = die
else:  # the target's files are written, the manifest not yet
    exporter.bundle.write_manifest = die
from exporter.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where, signum", [("quantizing", signal.SIGKILL), ("writing", signal.SIGKILL),
                                           ("writing", signal.SIGINT)])
def test_killed_export_leaves_the_old_bundle_or_nothing(tmp_path, where, signum):
    """The kill lands at a known point (a hook in the export kills its own process there), over an existing
    bundle that --overwrite would replace."""
    from runtimes.verify import verify

    out = tmp_path / "bundle"
    assert run_module("--model", "tiny", "--target", "onnx", "--quant", "fp32", "--out", str(out)).returncode == 0
    before = (out / "manifest.sha256").read_text()
    env = {**os.environ, "QWEN_EDGE_CACHE": str(tmp_path / "cache")}  # AWQ really starts (no cached result)
    quant = "awq-int4" if where == "quantizing" else "int4"
    proc = subprocess.run([sys.executable, "-c", KILL_EXPORT, where, str(int(signum)), "--model", "tiny", "--target",
                           "onnx", "--quant", quant, "--out", str(out), "--overwrite"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    partials = list(tmp_path.glob(".bundle.partial-*"))
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert len(partials) == 1  # killed mid-export: nothing could clean up its temp dir
    else:
        assert proc.returncode == 128 + signal.SIGINT and "interrupted" in proc.stderr, proc.stderr
        assert partials == []  # it unwound and removed its temp dir
    assert verify(out, run=False)["ok"] and (out / "manifest.sha256").read_text() == before  # the old one, whole
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
    import exporter.targets.onnx_cpu as onnx_target

    def fail_after_writing(module, weights, out_dir, *args, **kwargs):
        (out_dir / "model.onnx").write_bytes(b"half")
        raise UserError("the target failed at the very end")

    monkeypatch.setattr(onnx_target, "export_cpu", fail_after_writing)
    out = tmp_path / "bundle"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(out))
    assert code == 2 and "failed at the very end" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    from exporter.output import WORK_MARKER, _work_dir, atomic_output_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    made = _work_dir(tmp_path / "bundle", "partial")  # as a run that was then killed made it
    marker = json.loads((made / WORK_MARKER).read_text())
    (made / WORK_MARKER).write_text(json.dumps({**marker, "pid": int(dead.stdout)}))
    stale = made.rename(made.with_name(f".bundle.partial-{int(dead.stdout)}-{marker['token']}"))
    (stale / "model.onnx").write_bytes(b"half")
    other = _work_dir(tmp_path / "bundle", "partial")  # this process is alive: kept
    with atomic_output_dir(tmp_path / "bundle", "bundle") as tmp:
        (tmp / "x").write_text("done")
    assert not stale.exists() and other.exists() and (tmp_path / "bundle" / "x").is_file()


# ---- round 2: each of these was a traceback, a hang or an OOM on cd56057 -----------------------------------------

def one_line_error(result, *phrases):
    code, _, err = result
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(p in err for p in phrases), err


@pytest.mark.parametrize("argv, phrase", [
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--top-p", "nan"], "--top-p must be a finite number"),
    (["--seed", "-5"], "--seed must be a whole number from 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
])
def test_chat_sampling_values(capsys, argv, phrase):
    one_line_error(run_cli(capsys, "chat", *argv, "What is 2 + 2?"), phrase)


def test_chat_prompt_with_invalid_utf8():
    """Bytes that are not UTF-8 reach Python's argv as lone surrogates."""
    proc = subprocess.run([sys.executable, "-m", "exporter", "chat", b"What is \xff\xfe?"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not valid UTF-8" in proc.stderr, proc.stderr


def test_chat_context_past_the_model_is_refused_before_allocating(capsys):
    start = time.perf_counter()
    one_line_error(run_cli(capsys, "chat", "--max-seq-len", str(10 ** 9), "hi"), "max_position_embeddings, 512")
    assert time.perf_counter() - start < 30  # nothing of 10^9 positions was allocated


def deep(depth=100_000):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json", "tokenizer_config.json",
                                  "generation_config.json"])
def test_json_nested_past_the_recursion_limit(capsys, tmp_path, small_checkpoint, name):
    from runtimes.checkpoint import resolve_model_dir

    model_dir = copy_checkpoint(resolve_model_dir("tiny") if "tokenizer" in name or "generation" in name
                                else small_checkpoint, tmp_path / "m")
    (model_dir / name).write_text(deep())
    export_fails(capsys, model_dir, tmp_path, "nests its JSON too deeply")


@pytest.mark.parametrize("weight_map, phrase", [
    ([["model.embed_tokens.weight", "model.safetensors"]], "no weight_map object"),
    ({"model.embed_tokens.weight": 3}, "weight_map names 3"),
    ({"model.embed_tokens.weight": "../../outside.safetensors"}, "not a .safetensors file name"),
])
def test_index_weight_map_of_the_wrong_shape(capsys, tmp_path, small_checkpoint, weight_map, phrase):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    export_fails(capsys, model_dir, tmp_path, phrase)


@pytest.mark.parametrize("changes, phrase", [
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings is 'false'; it must be true or false"),
    ({"use_sliding_window": "false"}, "use_sliding_window is 'false'"),
    ({"rms_norm_eps": 1e308}, "rms_norm_eps is 1e+308; it must be a number from 1e-12 to 0.01"),
    ({"rope_theta": 1e-300}, "rope_theta is 1e-300; it must be a number from 1 to 1e+12"),
    ({"eos_token_id": "<|im_end|>"}, "eos_token_id is '<|im_end|>'"),
])
def test_config_fields_are_type_checked_up_front(capsys, tmp_path, small_checkpoint, changes, phrase):
    from tests.conftest import edit_config

    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    edit_config(model_dir, **changes)
    export_fails(capsys, model_dir, tmp_path, phrase)


@pytest.mark.parametrize("content, phrase", [
    ("{broken", "generation_config.json is not valid JSON"),
    ("[1, 2]", "generation_config.json is not a JSON object"),
    ('{"do_sample": true, "temperature": "hot"}', "temperature is 'hot'"),
    ('{"do_sample": "yes"}', "do_sample is 'yes'"),
    ('{"top_p": 7}', "top_p is 7"),
])
def test_generation_config_is_checked_at_export_and_in_chat(capsys, tmp_path, content, phrase):
    from runtimes.checkpoint import resolve_model_dir

    model_dir = copy_checkpoint(resolve_model_dir("tiny"), tmp_path / "m")
    (model_dir / "generation_config.json").write_text(content)
    export_fails(capsys, model_dir, tmp_path, phrase)
    one_line_error(run_cli(capsys, "chat", "--model", str(model_dir), "hi"), phrase)


def test_a_chat_template_that_would_hang_is_refused_quickly(capsys, tmp_path):
    from runtimes.checkpoint import resolve_model_dir

    model_dir = copy_checkpoint(resolve_model_dir("tiny"), tmp_path / "m")
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    export_fails(capsys, model_dir, tmp_path, "does too much work")
    one_line_error(run_cli(capsys, "chat", "--model", str(model_dir), "hi"), "does too much work")
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("source", ["{{ 'x' * 10000000000 }}", "{{ (range(100000) | list) * 100000 }}",
                                    "{{ 10 ** 100000000 }}"])
def test_template_operations_cannot_exhaust_memory(source):
    from runtimes.chat import TemplateBudgetExceeded, render_template

    with pytest.raises(TemplateBudgetExceeded):
        render_template(source)


def test_target_all_passes_each_option_to_its_targets(monkeypatch, tmp_path, capsys):
    """--profile, --npu-chunk, --qnn-soc, --activations and --delegate reach the targets they apply to under --target
    all, each target writing its own scheme (the targets' writers are stubbed: what is checked is what each one
    receives)."""
    from exporter.targets.registry import TARGETS
    from exporter.targets.target import Artifact

    seen = {}

    def fake_write(target, request):
        o = request.options
        seen[target.name] = dict(profile=o.profile, npu_chunk=o.npu_chunk, delegate=o.delegate,
                                 activations=o.activations, quant=request.quant["name"], scheme=request.scheme.name,
                                 qnn_socs=o.qnn_socs)
        assert (o.kv_cache, o.quant.calib, o.quant.seq_len) == ("auto", "arithmetic", 512)  # the int8 KV cache's
        (request.into / "model.bin").write_bytes(b"x")
        entry = {"name": "forward", "file": "model.bin", "inputs": [], "outputs": []}
        return Artifact([entry], "float32", "none (stub)")

    for target in TARGETS.values():
        monkeypatch.setattr(target, "write", lambda request, target=target: fake_write(target, request))
        monkeypatch.setattr(target, "check_libraries", lambda options: None)
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "all", "--quant", "8da4w", "--activations", "int8",
                           "--profile", "npu", "--npu-chunk", "16", "--embedding", "none", "--out",
                           str(tmp_path / "all"))
    assert code == 2 and "--activations int8 applies to the quantized linears of the onnx cpu profile" in err
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "all", "--quant", "8da4w", "--profile", "npu",
                           "--npu-chunk", "16", "--qnn-soc", "8gen3", "--delegate", "coreml", "--calib", "arithmetic",
                           "--out", str(tmp_path / "all"))
    assert code == 0, err
    everyone = dict(profile="npu", npu_chunk=16, delegate="coreml", activations=None, qnn_socs=("8gen3",))
    assert seen["onnx"] == dict(everyone, quant="int4", scheme="int4")
    assert seen["executorch"] == dict(everyone, quant="8da4w", scheme="8da4w")
    assert seen["coreml"] == dict(everyone, quant="int4", scheme="int4")


# ---- round 3 (issue 32): paths that are not what they claim; each was a hang, a traceback or a late failure ------

GOLDEN_BUNDLE = ROOT / "tests" / "golden" / "bundle"


def run_briefly(*argv, limit=120, **kwargs):
    """`python -m exporter ARGV` in a process of its own, so that a hang fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-m", "exporter", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=limit, **kwargs)


def one_line(proc, *phrases):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(p in lines[0] for p in phrases), proc.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("argv, phrase", [
    (["parity", "--model", "tiny", "--prompts", "{fifo}"], "--prompts {fifo} is a FIFO, not a regular file"),
    (["verify", "--bundle", GOLDEN_BUNDLE, "--no-run", "--json", "{fifo}"], "cannot write --json {fifo}: it is a FIFO"),
    (["bench", "--bundle", GOLDEN_BUNDLE, "--tasks", "{fifo}"], "--tasks {fifo} is a FIFO"),
    (["bench", "--bundle", GOLDEN_BUNDLE, "--text", "{fifo}"], "--text {fifo} is a FIFO"),
    (["--model", "tiny", "--target", "onnx", "--quant", "awq-int4", "--calib", "{fifo}", "--out", "{out}"],
     "--calib {fifo} is a FIFO"),
])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, fifo, argv, phrase):
    """Opening a FIFO blocks until someone writes (or reads) it: these hung forever."""
    fill = {"fifo": fifo, "out": tmp_path / "out"}
    one_line(run_briefly(*[str(a).format(**fill) for a in argv], limit=90), phrase.format(**fill))
    assert not (tmp_path / "out").exists()


def test_a_report_inside_the_bundle_is_refused(capsys, tmp_path):
    """verify --json written into the bundle made the next verify fail (a file the manifest does not list)."""
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(GOLDEN_BUNDLE, bundle)
    one_line_error(run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run", "--json", str(bundle / "r.json")),
                   "inside the bundle", "write it outside the bundle")
    assert run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")[0] == 0


def test_plots_onto_a_file_fail_before_the_run(capsys, tmp_path):
    """--plots naming a file failed after the whole measurement; now before anything is loaded (the golden
    bundle's backend does not exist here, so reaching the run would be a different error)."""
    target = tmp_path / "plots"
    target.write_text("the user's file")
    one_line_error(run_cli(capsys, "bench", "--bundle", str(GOLDEN_BUNDLE), "--no-accuracy", "--plots", str(target)),
                   f"cannot write --plots {target}", "not a directory")
    assert target.read_text() == "the user's file"


@pytest.mark.parametrize("command", [["verify"], ["chat", "hi"], ["parity"], ["bench"]])
def test_a_bundle_path_that_is_a_file_says_so(capsys, tmp_path, command):
    path = tmp_path / "b"
    path.write_text("x")
    argv = [command[0], "--bundle", str(path), *command[1:]]
    one_line_error(run_cli(capsys, *argv), f"bundle {path} is a regular file, not a directory")


@pytest.mark.parametrize("flag", ["--tasks", "--text"])
def test_bench_text_files_that_are_not_utf8(capsys, tmp_path, flag):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"question": "\xff\xfe", "answer": "1"}\n')
    one_line_error(run_cli(capsys, "bench", "--bundle", str(GOLDEN_BUNDLE), flag, str(path)),
                   f"{flag} {path} is not UTF-8 text")


def test_parity_prompts_that_are_not_utf8(capsys, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"What is \xff?\n")
    one_line_error(run_cli(capsys, "parity", "--model", "tiny", "--prompts", str(path)),
                   f"--prompts {path} is not UTF-8 text")


@pytest.mark.parametrize("content, phrase", [(b'{"text": "\xff\xfe"}\n', "is not UTF-8 text"),
                                             (b'{"text": ' + deep().encode() + b'}\n', "nests its JSON too deeply")])
def test_calibration_jsonl_not_utf8_or_deeply_nested(capsys, tmp_path, content, phrase):
    calib = tmp_path / "calib.jsonl"
    calib.write_bytes(content)
    out = tmp_path / "out"
    one_line_error(run_cli(capsys, "--model", "tiny", "--target", "onnx", "--quant", "awq-int4", "--calib",
                           str(calib), "--out", str(out)), phrase)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib.jsonl"]


@pytest.mark.parametrize("argv", [["make-model", "--shape", "0.6b", "--layers", "1"],
                                  ["quantize", "--model", "tiny", "--quant", "int8"]])
def test_full_disk_in_make_model_and_quantize(tmp_path, argv):
    """safetensors' writer wraps the OS error in its own exception type: it is still one line, nothing left."""
    limit = 300_000  # bytes per file: the model's weights do not fit

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    one_line(run_briefly(*argv, "--out", tmp_path / "m", limit=300, preexec_fn=small_files), "out of disk space")
    assert list(tmp_path.iterdir()) == []
