"""The fuzzing campaign: structured mutations of every file a user hands the tool and of its command line.

Each input kind starts from a real, valid document (the golden bundle's manifest, tiny's config.json,
generation_config.json, tokenizer files and chat template, a small checkpoint's safetensors header) and mutates
it the way a damaged or hostile file differs from a good one: a field replaced by a value of another type or an
absurd one, a number nudged, a key deleted, renamed or added, the whole document replaced, the bytes truncated,
made non-UTF-8 or nested deeply. Every case must end in success or in one `error:` line (a UserError: exit 2 at the
command line), or for `verify` in its problem list (exit 1): never a traceback, a signal or a hang (each case
runs under an alarm), and nothing is written outside the paths the command was told to write.

The default run is bounded (DEFAULT_EXAMPLES cases per kind). `QWEN_EDGE_FUZZ_EXAMPLES=N` runs N cases per kind,
and `QWEN_EDGE_FUZZ_REPORT=FILE` writes the cases run per kind as JSON (docs/reliability.md has the longer run's
command and counts).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.output import owner
from runtimes.bundle import DIGEST_FILE, MANIFEST, manifest_digest_line
from runtimes.errors import UserError
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "bundle"
TINY = ROOT / "runtimes" / "models" / "tiny"
DEFAULT_EXAMPLES = {"manifest": 300, "config": 1500, "generation_config": 300, "tokenizer": 200,
                    "chat_template": 300, "safetensors": 300, "cli": 1000}
HANG_SECONDS = 60  # one case of these takes milliseconds; a minute means it would never end
CASES: collections.Counter = collections.Counter()


def examples(kind: str) -> int:
    return int(os.environ.get("QWEN_EDGE_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES[kind])


def campaign(kind: str):
    return settings(max_examples=examples(kind), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if os.environ.get("QWEN_EDGE_FUZZ_REPORT"):
        Path(os.environ["QWEN_EDGE_FUZZ_REPORT"]).write_text(json.dumps(dict(sorted(CASES.items())), indent=2) + "\n")


class Hang(BaseException):
    """Raised by the alarm inside a case that ran past HANG_SECONDS (BaseException: no `except Exception` in the
    code under test can swallow it)."""


@contextlib.contextmanager
def no_hang():
    def alarm(signum, frame):
        raise Hang(f"a case ran past {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def user_error_or_success(action) -> object:
    """Run `action` under the alarm: its value, or None when it raised a UserError (one line at the command
    line)."""
    with no_hang():
        try:
            return action()
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc).strip() and "Traceback" not in str(exc), str(exc)
            return None


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def run_cli(capsys, argv: list[str], root: Path, may_write: tuple[Path, ...] = ()) -> int:
    """`python -m exporter ARGV` in-process as one case: exit 0, 1 (verify's problems) or 2 with one `error:` line,
    nothing written under `root` but `may_write`."""
    before = snapshot(root)
    with no_hang():
        code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, captured.err)
    assert "Traceback" not in captured.err, (argv, captured.err)
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
    allowed = [a for a in (Path(p).expanduser().resolve() for p in may_write)  # never `root` itself or above it
               if a != root.resolve() and a.is_relative_to(root.resolve())]
    for name in snapshot(root) - before:
        path = (root / name).resolve()
        assert any(path == a or path.is_relative_to(a) for a in allowed), (argv, f"wrote {name}")
    return code


# ---- structured mutations of JSON documents ----------------------------------------------------------------------

ODD_NUMBERS = [0, -1, 1, 2, 3, 7, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 2 ** 63, -2 ** 63, 10 ** 30,
               0.5, -0.0, 1e-320, 5e-324, 1e-308, 1e308, 3.4e38, float("nan"), float("inf"), float("-inf")]
ODD_TEXT = ["", " ", "../x", "../../outside", "/etc/passwd", "a/../../b", "~", "a\\b", "\x00", "model.bin",
            "manifest.json", "<|im_end|>", "<think>", "float32", "int8", "qwen3", "onnxruntime", "reference",
            "é" * 3, "\ud800", "x" * 300]
scalars = (st.none() | st.booleans() | st.sampled_from(ODD_NUMBERS) | st.integers() | st.floats()
           | st.sampled_from(ODD_TEXT) | st.text(max_size=16))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10) | st.sampled_from(ODD_TEXT), inner, max_size=4),
                           max_leaves=12)


def json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from json_paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from json_paths(inner, prefix + (index,))


def nudged(value, draw):
    """A number moved a little or a lot: the values just past a range check are where bugs live."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return draw(scalars)
    change = draw(st.sampled_from(["+1", "-1", "*2", "neg", "*1e6", "float", "int", "str"]))
    return {"+1": lambda v: v + 1, "-1": lambda v: v - 1, "*2": lambda v: v * 2, "neg": lambda v: -v,
            "*1e6": lambda v: v * 10 ** 6, "float": float, "int": lambda v: int(v) if np.isfinite(v) else 0,
            "str": str}[change](value)


@st.composite
def mutated(draw, base):
    """`base` with 1-3 structured changes, each at a path drawn from the whole document."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(json_paths(doc))))
        op = draw(st.sampled_from(["replace", "nudge", "nudge", "delete", "insert", "rename"]))
        if not path:
            if op in ("replace", "delete"):
                doc = draw(json_values)
            continue
        *parents, last = path
        holder = doc
        for key in parents:
            holder = holder[key]
        if op == "replace":
            holder[last] = draw(json_values)
        elif op == "nudge":
            holder[last] = nudged(holder[last], draw)
        elif op == "delete":
            del holder[last]
        elif op == "insert" and isinstance(holder[last], dict):
            holder[last][draw(st.text(max_size=10) | st.sampled_from(ODD_TEXT))] = draw(json_values)
        elif op == "insert" and isinstance(holder[last], list):
            holder[last].insert(draw(st.integers(0, len(holder[last]))), draw(json_values))
        elif op == "rename" and isinstance(holder, dict):
            holder[draw(st.text(max_size=10) | st.sampled_from(ODD_TEXT))] = holder.pop(last)
    return doc


@st.composite
def serialized(draw, base):
    """The mutated document's bytes, sometimes damaged below the JSON level."""
    data = json.dumps(draw(mutated(base)), allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8",
                                                                                                "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "bytes", "deep", "bom", "duplicate"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif damage == "deep":
        depth = draw(st.sampled_from([100, 5000, 200_000]))
        data = b"[" * depth + data + b"]" * depth
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "duplicate" and data.startswith(b"{") and len(data) > 2:
        data = data[:-1] + b"," + data[1:]  # every key twice
    return data


def fresh(work: Path, source: Path) -> Path:
    """A new copy of `source` under `work` (the previous case's copy removed)."""
    target = work / "case"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("eval.json", "training.json"))
    return target


def relist(bundle: Path, name: str) -> None:
    """Record a changed file's size and sha256 in the manifest and sign it again, as a careful forger would."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    sign(bundle, json.dumps(manifest, indent=2).encode())


def sign(bundle: Path, manifest: bytes) -> None:
    (bundle / MANIFEST).write_bytes(manifest)
    (bundle / DIGEST_FILE).write_text(manifest_digest_line(manifest))


# ---- the campaign -------------------------------------------------------------------------------------------------

GOLDEN_MANIFEST = json.loads((GOLDEN / MANIFEST).read_text())


@campaign("manifest")
@given(data=serialized(GOLDEN_MANIFEST), signed=st.booleans())
def test_fuzz_manifest(tmp_path, capsys, data, signed):
    """verify --no-run and --overwrite's ownership check (owner) on a bundle whose manifest is mutated, re-signed
    or not: the digest, schema, consistency, file-table and path checks all see hostile values."""
    CASES["manifest"] += 1
    bundle = fresh(tmp_path, GOLDEN)
    if signed:
        sign(bundle, data)
    else:
        (bundle / MANIFEST).write_bytes(data)
    code = run_cli(capsys, ["verify", "--bundle", bundle, "--no-run"], tmp_path)
    found, why = owner(bundle)
    assert (found == "bundle") == (code == 0), why


TINY_CONFIG = json.loads((TINY / "config.json").read_text())


@campaign("config")
@given(data=serialized(TINY_CONFIG))
def test_fuzz_config(tmp_path, data):
    """config.json as every command reads it (load_config), then the module's arguments from what it accepts."""
    from runtimes.checkpoint import load_config
    from runtimes.model import ModelArgs

    CASES["config"] += 1
    (tmp_path / "config.json").write_bytes(data)
    config = user_error_or_success(lambda: load_config(tmp_path))
    if config is not None:
        ModelArgs.from_config(config)


TINY_GENERATION = json.loads((TINY / "generation_config.json").read_text())


@campaign("generation_config")
@given(data=serialized(TINY_GENERATION), thinking=st.booleans(), seed=st.integers(0, 2 ** 32))
def test_fuzz_generation_config(tmp_path, capsys, data, thinking, seed):
    """A bundle's generation_config.json, listed and signed again: verify --no-run checks it; what it accepts must
    then sample (the sampling parameters built from it, one draw from fixed logits)."""
    from runtimes.sampling import Sampler, SamplingParams, read_generation_config

    CASES["generation_config"] += 1
    bundle = fresh(tmp_path, GOLDEN)
    (bundle / "generation_config.json").write_bytes(data)
    relist(bundle, "generation_config.json")
    run_cli(capsys, ["verify", "--bundle", bundle, "--no-run"], tmp_path)

    def sample():
        params = SamplingParams.for_mode(read_generation_config(bundle), thinking=thinking)
        token = Sampler(SamplingParams(**{**vars(params), "seed": seed}))(np.linspace(-3, 9, 64), [1, 2, 2, 5])
        assert 0 <= token < 64
        return token

    user_error_or_success(sample)


TOKENIZER_JSON = json.loads((TINY / "tokenizer.json").read_text())
TOKENIZER_CONFIG = {k: v for k, v in json.loads((TINY / "tokenizer_config.json").read_text()).items()
                    if k != "chat_template"}  # Qwen3's own renderer: the template has a kind of its own below
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 12 + 30?"},
            {"role": "assistant", "content": "<think>\nadd\n</think>\n\n42"}, {"role": "user", "content": "and 7 - 9?"}]


def use_tokenizer(directory: Path):
    from runtimes.tokenizer import QwenTokenizer

    tokenizer = QwenTokenizer(directory)
    ids = tokenizer.encode(tokenizer.render(MESSAGES))
    tokenizer.decode(ids)
    return ids


@campaign("tokenizer")
@given(which=st.sampled_from(["tokenizer.json", "tokenizer_config.json"]), data=st.data())
def test_fuzz_tokenizer_files(tmp_path, which, data):
    """tokenizer.json (vocab, merges, added tokens, pre-tokenizer, decoder) or tokenizer_config.json mutated:
    loading, rendering a conversation, encoding and decoding it."""
    base = TOKENIZER_JSON if which == "tokenizer.json" else TOKENIZER_CONFIG
    (tmp_path / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (tmp_path / which).write_bytes(data.draw(serialized(base)))
    CASES["tokenizer"] += 1  # (counted once drawn: hypothesis may abandon a draw that runs past its budget)
    user_error_or_success(lambda: use_tokenizer(tmp_path))


SIZES = st.sampled_from([0, 1, 3, 100, 10_000, 1_000_000, 20_000_000])
FRAGMENTS = [
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "{{ messages[0].content }}",
    "{{ messages[N].content }}", "{{ raise_exception('this template refuses') }}", "{{ 'a' * N }}",
    "{{ 'a'|center(N) }}", "{{ 'ab'|indent(N) }}", "{{ range(N)|join(',') }}", "{{ (range(N)|list) * N }}",
    "{{ 'ab'|replace('a', 'a' * N) }}", "{{ '%s'|format(messages) }}", "{{ messages|tojson }}",
    "{{ tools|tojson }}", "{{ messages|map(attribute='role')|join }}", "{{ 10 ** N }}", "{{ N / 0 }}",
    "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}", "{{ lipsum(N) }}", "{{ strftime_now('%Y') }}",
    "{% set ns = namespace(n=0) %}{% for i in range(N) %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "{{ bos_token }}{{ eos_token }}", "{{ m.content",
    "{% for %}", "{% endfor %}", "{{ messages[0]['content'][::-1] }}", "{{ 'x'|wordwrap(N) }}",
    "{{ enable_thinking }}", "<think>\n\n</think>\n\n", "{{ '<|im_end|>' * N }}", "{# a comment #}",
    "{% for i in range(N) %}{% for j in range(N) %}{% endfor %}{% endfor %}", "{{ messages|length }}",
]


@campaign("chat_template")
@given(parts=st.lists(st.tuples(st.sampled_from(FRAGMENTS), SIZES), min_size=1, max_size=5))
def test_fuzz_chat_template(tmp_path, parts):
    """A checkpoint's own chat template built from fragments (loops, filters that build long strings, sandbox
    escapes, recursion, errors): loading it, rendering a conversation and encoding what it rendered."""
    CASES["chat_template"] += 1
    template = "".join(fragment.replace("N", str(size)) for fragment, size in parts)
    (tmp_path / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**TOKENIZER_CONFIG, "chat_template": template}))
    user_error_or_success(lambda: use_tokenizer(tmp_path))


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


@pytest.fixture(scope="module")
def safetensors_parts(small_checkpoint):
    return split_safetensors(small_checkpoint / "model.safetensors")


@campaign("safetensors")
@given(data=st.data(), length=st.sampled_from(["true"] * 5 + ["short", "long", "huge"]),
       tail=st.sampled_from(["same", "truncated", "extra"]))
def test_fuzz_safetensors_header(tmp_path, small_checkpoint, safetensors_parts, data, length, tail):
    """model.safetensors with its JSON header mutated (dtypes, shapes, offsets, names, metadata), its length field
    lying, its data cut short or grown: loading the checkpoint into the module."""
    from runtimes.model import from_pretrained

    header, payload = safetensors_parts
    raw = data.draw(serialized(header))
    CASES["safetensors"] += 1
    size = {"true": len(raw), "short": max(len(raw) - 3, 0), "long": len(raw) + 5, "huge": 1 << 40}[length]
    body = {"same": payload, "truncated": payload[:len(payload) // 2], "extra": payload + b"\0" * 16}[tail]
    shutil.copy(small_checkpoint / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", size) + raw + body)
    user_error_or_success(lambda: from_pretrained(tmp_path, max_seq_len=16))


# ---- command-line values -------------------------------------------------------------------------------------------

class Reached(BaseException):
    """The command's values passed its checks and it reached its heavy work (stubbed out here: exports and
    measurements are tested elsewhere; this is about reading the command line)."""


NUMBER_TEXT = (st.sampled_from(["0", "-1", "1", "2", "16", "64", "1e-320", "1e308", "nan", "inf", "-inf", "-0",
                                "99999999999999999999999", "0x10", "1_000", " 5", "5.5", "", "abc", "\udcff"])
               | st.integers(-2 ** 70, 2 ** 70).map(str) | st.floats().map(repr))
FREE_TEXT = st.text(max_size=24) | st.sampled_from(["<|im_end|>", "/no_think", "\udcff\udcfe", "", "-", "--out"])
PATH_NAMES = ["missing", "file.txt", "bad.txt", "fifo", "dir", "GOLDEN", "GOLDEN/manifest.json", "GOLDEN/report",
              "messages.json", "out", "~", "/", ".", "", "-", "dir/inner/deep", "file.txt/x"]


def choice(*values):
    return st.sampled_from([*values, "bogus", ""])


PATH = st.sampled_from(PATH_NAMES)
MODEL = st.sampled_from(["tiny", "TINY", "Qwen/Qwen3-0.6B", "../x", *PATH_NAMES])
BARE = st.just(None)
EXPORT_FLAGS = {"--model": MODEL, "--target": choice("onnx", "executorch", "coreml", "all"),
                "--quant": choice("fp32", "fp16", "int8", "int4", "awq-int4", "8da4w"), "--group-size": NUMBER_TEXT,
                "--asymmetric": BARE, "--embedding": choice("auto", "int8", "int4", "none"),
                "--calib": PATH | st.sampled_from(["builtin", "arithmetic"]), "--samples": NUMBER_TEXT,
                "--seq-len": NUMBER_TEXT, "--device": choice("cpu", "cuda"), "--out": PATH, "--overwrite": BARE}
FLAGS = {
    "export": {**EXPORT_FLAGS, "--max-seq-len": NUMBER_TEXT, "--profile": choice("cpu", "npu"),
               "--npu-chunk": NUMBER_TEXT, "--qnn-soc": FREE_TEXT | st.sampled_from(["8gen3", "all", "8gen2,8elite"]),
               "--activations": choice("float", "int8"), "--kv-cache": choice("auto", "float32", "float16", "int8"),
               "--delegate": choice("xnnpack", "coreml", "qnn")},
    "quantize": EXPORT_FLAGS,
    "make-model": {"--shape": choice("0.6b", "1.7b", "4b"), "--layers": NUMBER_TEXT, "--seed": NUMBER_TEXT,
                   "--dtype": choice("float32", "float16", "bfloat16"), "--out": PATH, "--overwrite": BARE},
    "parity": {"--bundle": PATH, "--model": MODEL, "--prompts": PATH, "--new-tokens": NUMBER_TEXT,
               "--thinking-budget": NUMBER_TEXT, "--reference": MODEL, "--tolerance": NUMBER_TEXT, "--json": PATH},
    "bench": {"--bundle": PATH, "--against": MODEL, "--json": PATH, "--markdown": PATH, "--plots": PATH,
              "--threads": NUMBER_TEXT, "--prompt-lengths": NUMBER_TEXT | FREE_TEXT, "--new-tokens": NUMBER_TEXT,
              "--runs": NUMBER_TEXT, "--text": PATH, "--windows": NUMBER_TEXT,
              "--tasks": PATH | st.just("arithmetic"), "--problems": NUMBER_TEXT,
              "--budgets": NUMBER_TEXT | FREE_TEXT | st.just("0,32,none"), "--no-accuracy": BARE,
              "--energy": choice("auto", "rapl", "powermetrics", "nvml", "none"), "--soc": FREE_TEXT,
              "--android-energy": PATH},
    "chat": {"--model": MODEL, "--bundle": PATH, "--thinking-budget": NUMBER_TEXT, "--no-think": BARE,
             "--max-new-tokens": NUMBER_TEXT, "--max-seq-len": NUMBER_TEXT, "--temperature": NUMBER_TEXT,
             "--top-p": NUMBER_TEXT, "--top-k": NUMBER_TEXT, "--min-p": NUMBER_TEXT, "--seed": NUMBER_TEXT,
             "--system": FREE_TEXT, "--prompt-file": PATH, "--messages": PATH, "--tools": PATH, "--json": PATH,
             "--allow-special-tokens-in-user-text": BARE},
    # literal addresses and localhost only: a name would be looked up in DNS
    "serve": {"--bundle": PATH, "--host": st.sampled_from(["127.0.0.1", "::1", "localhost", "", "0.0.0.0"]),
              "--port": NUMBER_TEXT, "--model-name": FREE_TEXT, "--max-tokens": NUMBER_TEXT, "--queue": NUMBER_TEXT,
              "--max-request-bytes": NUMBER_TEXT, "--allow-special-tokens-in-user-text": BARE},
    "verify": {"--bundle": PATH, "--json": PATH, "--no-run": BARE},
    "deploy": {"--bundle": PATH, "--android": PATH, "--ios": PATH},
}
OUTPUT_FLAGS = ("--out", "--json", "--markdown", "--plots")


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS[command])), max_size=6))
    argv = [] if command == "export" and draw(st.booleans()) else [command]
    for flag in flags:
        value = draw(FLAGS[command][flag])
        argv += [flag] if value is None else [flag, value]
    if command == "chat" or draw(st.integers(0, 9)) == 0:
        argv.append(draw(FREE_TEXT | st.sampled_from(["--bogus", "What is 2 + 2?"])))
    return command, argv


@pytest.fixture
def cli_place(tmp_path, monkeypatch):
    """A working directory with one of each kind of path (cwd and HOME point there), and the heavy work of each
    command replaced by Reached."""
    import exporter.commands.bench
    import exporter.commands.chat
    import exporter.commands.parity
    import exporter.export
    import exporter.make_model
    import exporter.quantize

    def reached(*args, **kwargs):
        raise Reached()

    for module, name in ((exporter.export, "export"), (exporter.quantize, "quantize_checkpoint"),
                         (exporter.make_model, "write_random_checkpoint"), (exporter.commands.bench, "bench"),
                         (exporter.commands.parity, "bundle_parity"), (exporter.commands.parity, "model_parity"),
                         (exporter.commands.chat, "open_session")):
        monkeypatch.setattr(module, name, reached)
    place = tmp_path / "place"
    place.mkdir()
    (place / "file.txt").write_text("What is 2 + 2?\n")
    (place / "bad.txt").write_bytes(b"\xff\xfe not UTF-8\n")
    os.mkfifo(place / "fifo")
    (place / "dir").mkdir()
    (place / "messages.json").write_text(json.dumps(MESSAGES))
    shutil.copytree(GOLDEN, place / "GOLDEN")
    monkeypatch.chdir(place)
    monkeypatch.setenv("HOME", str(place))
    monkeypatch.setattr(sys, "stdin", sys.stdin)  # each case gets a stdin of its own (chat reads '-' from it)
    return place


@campaign("cli")
@given(line=command_lines())
def test_fuzz_command_line(cli_place, capsys, line):
    """Every command with any subset of its flags, each given ordinary, absurd, non-numeric, non-UTF-8 or path-like
    values (missing, a file, a FIFO, a directory, a bundle, ~, /): one line and exit 2, or the command reaches its
    work; nothing written but where an output flag pointed."""
    command, argv = line
    sys.stdin = io.TextIOWrapper(io.BytesIO(b"What is 2 + 2?\n"))
    CASES["cli"] += 1
    CASES[f"cli {command}"] += 1
    outputs = [cli_place / argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS]
    try:
        run_cli(capsys, argv, cli_place, tuple(outputs))
    except Reached:
        capsys.readouterr()
