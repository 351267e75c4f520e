"""The Core ML target. On Linux (no Core ML prediction) everything but prediction is checked: each package's spec,
its functions' I/O and states against the manifest, the MIL programs and their state updates, our exact codes
and scales in the files, each weight stored once, the size, the chaining plan (shared with the Swift core through
ios-demo's fixture), and the converted modules' numerics in PyTorch, chained as the backend chains them. On
macOS the bundles also run and pass parity (the macOS CI job)."""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter.make_model import SHAPES, write_random_checkpoint
from runtimes.model import ModelArgs, Qwen3, RMSNorm, from_pretrained
from runtimes.quant.recipe import QuantRecipe, apply_fake_quant, quantize_module
from runtimes.quant.rtn import QuantizedTensor
from runtimes.bundle import load_backend, read_manifest, check_files, schema_errors
from runtimes.errors import UserError
from runtimes.backends.coreml import CoreMLPlan, Piece, validate_bundle
from exporter.targets import coreml
from tests.conftest import ROOT, SMALL, run_cli

QUANTS = ("fp16", "int4")  # the int4 bundle is exported with an int8 embedding: int4 and int8 codes in one bundle
MAX_SEQ_LEN = 256
TWO_CHUNKS = 450_000  # bytes per chunk that split tiny's int4 layers (0.21 MB each) into two chunks of two
PLAN_FIXTURE = ROOT / "ios-demo" / "Tests" / "QwenEdgeCoreTests" / "Fixtures" / "coreml_plan.json"
on_macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS 15+")


def export_tiny(out: Path, quant: str, monkeypatch=None, chunk_bytes: int | None = None,
                stderr: io.StringIO | None = None) -> Path:
    """tiny through the CLI; int4 with an int8 embedding (--embedding auto would give an int4 table)."""
    from exporter.cli import main

    if chunk_bytes:
        monkeypatch.setattr(coreml, "CHUNK_BYTES", chunk_bytes)
    embedding = ["--embedding", "int8"] if quant == "int4" else []
    try:
        with contextlib.redirect_stderr(stderr or sys.stderr):
            assert main(["--model", "tiny", "--target", "coreml", "--quant", quant, *embedding,
                         "--max-seq-len", str(MAX_SEQ_LEN), "--out", str(out)]) == 0
    finally:
        if chunk_bytes:
            monkeypatch.undo()
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """fp16 in one chunk, int4 (int8 embedding) in two (tiny is far below CHUNK_BYTES). What the exports wrote to
    stderr is kept under "stderr"."""
    base = tmp_path_factory.mktemp("coreml")
    patch, stderr = pytest.MonkeyPatch(), io.StringIO()
    out = {quant: export_tiny(base / quant, quant, patch, TWO_CHUNKS if quant == "int4" else None, stderr)
           for quant in QUANTS}
    return {**out, "stderr": stderr.getvalue()}


def test_export_prints_no_library_noise(bundles):
    """coremltools draws a progress bar per conversion stage and pass pipeline, and warns about untested torch
    versions; without --verbose none of it shows (stderr is no terminal here, so no stage lines either)."""
    assert bundles["stderr"] == ""


@pytest.mark.parametrize("quant", QUANTS)
def test_spec_matches_manifest_and_validates(bundles, quant):
    manifest = read_manifest(bundles[quant])
    assert check_files(bundles[quant], manifest) == []
    assert (manifest["target"], manifest["backend"]) == ("coreml", "coreml")
    assert manifest["kv_cache"]["dtype"] == "float16"
    report = validate_bundle(bundles[quant], manifest)
    assert report["problems"] == []
    from runtimes.fixture import FIXTURE_FILE
    from runtimes.verify import verify

    result = verify(bundles[quant])
    assert result["ok"]
    # the fixture is written, listed and hashed like every file; off macOS it cannot run, and the note says so
    assert manifest["fixture"]["file"] == FIXTURE_FILE and FIXTURE_FILE in manifest["files"]
    assert json.loads((bundles[quant] / FIXTURE_FILE).read_text())["criterion"]["judged_by_agreement"]
    if sys.platform != "darwin":
        assert result["fixture"] is None and any("nor was the reference fixture" in n for n in result["notes"])
    assert report["spec_version"] >= 9  # iOS 18 / macOS 15: the first with states and multifunction packages
    arch = manifest["architecture"]
    chunks = [e for e in manifest["entry_points"] if "layers" in e]
    files = sorted({e["file"] for e in chunks})
    assert files == [f"chunk_{i}.mlpackage" for i in range(2 if quant == "int4" else 1)]
    assert set(report["packages"]) == {"embed_head.mlpackage", *files}
    for entry in chunks:
        states = {s["name"]: s["shape"] for s in entry["states"]}
        assert states == {name: [len(entry["layers"]), arch["num_key_value_heads"], MAX_SEQ_LEN, arch["head_dim"]]
                          for name in ("k_cache", "v_cache")}
    assert [e["name"] for e in manifest["entry_points"]] == \
        ["embed_head.prefill", "embed_head.decode"] + [f"{f[:-10]}.{s}" for f in files for s in ("prefill", "decode")] \
        + ["embed_head.logits"]
    plan = CoreMLPlan.from_manifest(manifest)
    assert plan.prefill_len == 64 and plan.chunk_files == files


def test_validation_catches_a_manifest_that_lies(bundles):
    manifest = json.loads((bundles["int4"] / "manifest.json").read_text())
    chunk = manifest["entry_points"][2]
    chunk["states"][0]["shape"][2] = 512
    chunk["inputs"][0]["name"] = "tokens"
    manifest["entry_points"][3]["function"] = "step"
    manifest["entry_points"][-1]["outputs"][0]["dtype"] = "float32"
    problems = validate_bundle(bundles["int4"], manifest)["problems"]
    assert any("chunk_0.prefill states k_cache: shape" in p for p in problems), problems
    assert any("chunk_0.prefill inputs:" in p for p in problems)
    assert any("has no function 'step'" in p for p in problems)
    assert any("embed_head.logits outputs logits: dtype float16" in p for p in problems)
    assert any("do not make a chain" in p for p in problems)


def test_files_hold_our_exact_codes_and_scales(bundles):
    """Every int4 linear and the int8 embedding table (also the tied LM head): our codes and fp16 scales."""
    from exporter.export import prepare
    from exporter.options import QuantOptions

    quant = "int4"
    manifest = read_manifest(bundles[quant])
    q = manifest["quant"]
    _, weights, *_ = prepare("tiny", QuantOptions(quant, q["group_size"], embedding=q["embedding"]), MAX_SEQ_LEN,
                             progress=False)
    stored = {(codes.shape, np.asarray(codes, dtype=np.int8).tobytes()): scales
              for codes, scales in validate_bundle(bundles[quant], manifest)["quantized"]}
    assert len(stored) == len(weights)  # the tied LM head reads the embedding's table
    for name, qt in weights.items():
        scales = stored.get((tuple(qt.q.shape), qt.q.numpy().astype(np.int8).tobytes()))
        assert scales is not None, f"{name}: codes not found in the files"
        assert np.array_equal(np.asarray(scales).reshape(qt.scales.shape), qt.scales.half().numpy()), name
    assert {qt.bits for qt in weights.values()} == {4, 8} and q["embedding"] == "int8"
    assert q["int4_scale_dtype"] == q["int8_scale_dtype"] == "float16"


def _blobs_by_function(package: Path) -> dict[str, set]:
    """function → the (file, offset) of every weight-file value it reads (constexpr inputs and consts)."""
    from coremltools.proto import MIL_pb2, Model_pb2

    codes = (MIL_pb2.INT4, MIL_pb2.INT8)
    spec = Model_pb2.Model()
    spec.ParseFromString((package / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    out = {}
    for name, function in spec.mlProgram.functions.items():
        found = set()
        for block in function.block_specializations.values():
            for op in block.operations:
                values = [op.attributes["val"]] if op.type == "const" else []
                values += [a.value for put in op.inputs.values() for a in put.arguments if a.HasField("value")]
                found |= {(v.blobFileValue.fileName, v.blobFileValue.offset) for v in values
                          if v.HasField("blobFileValue") and v.type.tensorType.dataType in codes}
        out[name] = found
    return out


def test_each_package_stores_its_weights_once(bundles):
    """The prefill and decode functions of a chunk read the same codes at the same offsets (the multifunction
    merge deduplicated them); the embedding functions and the tied LM head read one table."""
    bundle = bundles["int4"]
    n_linears = 7
    for index, layers in enumerate(([0, 1], [2, 3])):
        blobs = _blobs_by_function(bundle / f"chunk_{index}.mlpackage")
        assert blobs["prefill"] == blobs["decode"] and len(blobs["decode"]) == n_linears * len(layers)
    head = _blobs_by_function(bundle / "embed_head.mlpackage")
    assert head["prefill"] == head["decode"] == head["logits"] and len(head["logits"]) == 1
    report = validate_bundle(bundle, read_manifest(bundle))["packages"]
    assert all(p["blob_refs"] > p["blobs"] for p in report.values())


def test_fp16_bundle_has_no_quantized_ops(bundles):
    report = validate_bundle(bundles["fp16"], read_manifest(bundles["fp16"]))
    assert report["quantized"] == [] and report["ops"].get("linear", 0) > 0


def test_state_update_writes_at_the_position_input(bundles):
    """Each layer reads its chunk's states, writes the new keys and values with a slice_update whose begin is
    computed from the `position` input (not a constant), and hands the result back with coreml_update_state."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = ct.models.MLModel(str(bundles["fp16"] / "chunk_0.mlpackage"), skip_model_load=True)
    spec = model.get_spec()
    program = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    n_layers = read_manifest(bundles["fp16"])["architecture"]["num_hidden_layers"]
    for name in ("prefill", "decode"):
        ops = list(program.functions[name].operations)
        updates = [op for op in ops if op.op_type == "slice_update"]
        assert len(updates) == 2 * n_layers and all(op.begin.val is None for op in updates)
        assert sum(op.op_type == "coreml_update_state" for op in ops) == 2 * n_layers
        assert sum(op.op_type == "read_state" for op in ops) == 2
        assert all(op.x.op.op_type in ("read_state", "coreml_update_state") for op in updates)
        inputs = {v.name: v.shape for v in program.functions[name].inputs.values()}
        seq_len = 64 if name == "prefill" else 1
        assert inputs["causal_mask"] == (1, 1, seq_len, MAX_SEQ_LEN) and inputs["position"] == (1,)


class TorchChain:
    """The modules that are traced and converted, run in PyTorch and chained by CoreMLPlan as the coreml backend
    chains the Core ML functions: fp16 states, hidden states rounded to fp16 between calls."""

    def __init__(self, module: Qwen3, weights: dict, max_seq_len: int, chunk_bytes: int):
        twin = coreml.for_coreml(module, weights, range(0))
        self.embed, self.head = coreml.Embed(twin).eval(), coreml.Logits(twin).eval()
        ranges = coreml.plan_chunks(module, weights, chunk_bytes)
        self.chunks = [coreml.LayerChunk(module, weights, r, max_seq_len).eval() for r in ranges]
        manifest = {"entry_points": coreml.entry_points(module.args, ranges, max_seq_len), "max_seq_len": max_seq_len,
                    "architecture": {"num_hidden_layers": module.args.num_hidden_layers}}
        self.plan = CoreMLPlan.from_manifest(manifest)
        self.position = 0

    @torch.no_grad()
    def feed(self, token_ids: list[int]) -> torch.Tensor:
        """Logits of every fed token [n, vocab]."""
        rows, done = [], 0
        for piece in self.plan.pieces(self.position, len(token_ids)):
            feeds = self.plan.feeds(piece, token_ids[done:done + piece.count])
            hidden = self.embed(torch.from_numpy(feeds["input_ids"])).half().float()
            position = torch.from_numpy(feeds["position"])
            mask = torch.from_numpy(feeds["causal_mask"].astype(np.float32))
            for chunk in self.chunks:
                hidden = chunk(hidden, position, mask).half().float()
            rows += [self.head(hidden[:, r:r + 1]).half().float()[0, 0] for r in range(piece.count)]
            done += piece.count
        self.position += len(token_ids)
        return torch.stack(rows)


@pytest.mark.parametrize("quant", ["fp16", "int4"])
def test_converted_formulation_matches_the_reference(quant):
    """Two chunks; prefill pieces padded to T = 16 (a whole one, a short one), the end of the context reached by
    decode steps when a prefill call no longer fits; against the fake-quant reference with fp16 scales."""
    max_seq_len = 40
    reference, _ = from_pretrained("tiny", max_seq_len=max_seq_len)
    weights = {} if quant == "fp16" else quantize_module(reference, QuantRecipe.for_quant("int4", group_size=64))
    old = coreml.PREFILL_LEN
    coreml.PREFILL_LEN = 16
    try:
        chain = TorchChain(reference, weights, max_seq_len, TWO_CHUNKS if weights else 1_600_000)  # fp16: 0.79 MB a layer
    finally:
        coreml.PREFILL_LEN = old
    assert len(chain.chunks) == 2 and chain.plan.prefill_len == 16
    apply_fake_quant(reference, weights, int4_scale_dtype="float16", int8_scale_dtype="float16")
    ids = torch.randint(0, reference.args.vocab_size, (max_seq_len,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.prefill(ids, 0)[0]
    pieces = [chain.plan.pieces(a, b - a) for a, b in ((0, 21), (21, 30), (30, 36))]
    assert [[(p.step, p.count) for p in piece] for piece in pieces] == \
        [[("prefill", 16), ("prefill", 5)], [("prefill", 9)], [("decode", 1)] * 6]  # 30 + 16 > 40: token by token
    got = torch.cat([chain.feed(ids[a:b].tolist()) for a, b in ((0, 21), (21, 30), (30, 36))]
                    + [chain.feed([t]) for t in ids[36:].tolist()])
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99
    assert (got - expected).abs().max() < 0.05  # fp16 caches, hidden states and logits


def test_plan_pads_prefill_and_falls_back_to_decode():
    plan = CoreMLPlan({}, None, prefill_len=4, max_seq_len=10, hidden_size=8)
    assert plan.pieces(0, 9) == [Piece("prefill", 0, 4, 4), Piece("prefill", 4, 4, 4), Piece("decode", 8, 1, 1)]
    assert plan.pieces(5, 3) == [Piece("prefill", 5, 3, 4)]  # padded to 4: positions 5..8 fit
    assert plan.pieces(7, 3) == [Piece("decode", p, 1, 1) for p in (7, 8, 9)]  # 7 + 4 > 10
    with pytest.raises(UserError, match="11 positions exceed the bundle's context of 10"):
        plan.pieces(8, 3)
    feeds = plan.feeds(Piece("prefill", 5, 3, 4), [7, 8, 9])
    assert feeds["input_ids"].tolist() == [[7, 8, 9, 0]] and feeds["position"].tolist() == [5]
    mask = feeds["causal_mask"]
    assert mask.shape == (1, 1, 4, 10) and mask.dtype == np.float16
    assert (mask[0, 0] == 0).tolist() == [[k <= 5 + j for k in range(10)] for j in range(4)]
    assert np.isneginf(mask[0, 0, 0, 6])


def _plan_cases(plan: CoreMLPlan) -> list[dict]:
    cases = []
    for position, count in ((0, 1), (0, 64), (0, 130), (10, 70), (190, 10), (193, 5), (255, 1)):
        pieces = plan.pieces(position, count)
        cases.append({"position": position, "count": count,
                      "pieces": [{"step": p.step, "position": p.position, "count": p.count, "seq_len": p.seq_len}
                                 for p in pieces],
                      "first_mask_rows": ["".join("1" if v == 0 else "0" for v in row)
                                          for row in plan.feeds(pieces[0], [])["causal_mask"][0, 0, :2]]})
    return cases


def test_swift_fixture_is_this_plan(bundles):
    """ios-demo's Swift plan is tested against coreml_plan.json: its manifest's entry points are what this export
    writes (tiny int4 in two chunks) and its cases are what CoreMLPlan computes."""
    fixture = json.loads(PLAN_FIXTURE.read_text())
    manifest = read_manifest(bundles["int4"])
    assert fixture["manifest"]["entry_points"] == manifest["entry_points"]
    assert schema_errors(fixture["manifest"]) == []
    plan = CoreMLPlan.from_manifest(fixture["manifest"])
    assert fixture["chains"] == {step: [c.name for c in plan.chains[step]] for step in ("prefill", "decode")}
    assert fixture["cases"] == _plan_cases(plan)


def test_chunks_follow_the_weight_budget():
    """4B with int4 linears (group 128) and an int8 embedding: 4 chunks of 9 layers, each within CHUNK_BYTES;
    0.6B int4 fits one chunk; a budget below one layer still gives one layer per chunk."""
    def shape(name):
        with torch.device("meta"):
            module = Qwen3(ModelArgs(**{k: v for k, v in SHAPES[name].items() if k in ModelArgs.__dataclass_fields__}))
        weights = {}
        for pname, p in module.named_parameters():
            if pname.startswith("layers.") and pname.endswith("proj.weight"):
                weights[pname] = QuantizedTensor(torch.empty(p.shape, dtype=torch.int8, device="meta"),
                                                 torch.empty(p.shape[0], p.shape[1] // 128, device="meta"), None, 4, 128)
        return module, weights

    module, weights = shape("4b")
    chunks = coreml.plan_chunks(module, weights)
    assert chunks == [range(0, 9), range(9, 18), range(18, 27), range(27, 36)]
    sizes = [sum(coreml._weight_bytes(module, weights, f"layers.{i}.") for i in r) for r in chunks]
    assert all(400 * 2**20 < s <= coreml.CHUNK_BYTES for s in sizes), sizes
    module, weights = shape("0.6b")
    assert coreml.plan_chunks(module, weights) == [range(0, 28)]
    assert coreml.plan_chunks(module, weights, budget=1) == [range(i, i + 1) for i in range(28)]


def test_scaled_norm_stays_finite_in_fp16():
    """Converted to fp16, the model's RMSNorm squares x in fp16: inf from |x| ≈ 256 on. The Core ML swap scales
    by max|x| first: finite, and the same function."""
    norm = RMSNorm(64, 1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64) * 3000
    expected = norm(x)
    naive = (x.half() * torch.rsqrt(x.half().pow(2).mean(-1, keepdim=True) + 1e-6)).float()
    assert not torch.isfinite(naive).all() or (naive - expected).abs().max() > 0.5
    scaled = coreml.ScaledRMSNorm(norm)
    assert torch.allclose(scaled(x), expected, atol=1e-5)
    half = coreml.ScaledRMSNorm(norm).half()
    got = half(x.half()).float()
    assert torch.isfinite(got).all() and (got - expected).abs().max() < 0.02
    small = torch.randn(1, 64) * 1e-3
    assert torch.isfinite(half(small.half())).all()


@pytest.mark.slow
def test_int4_packages_are_near_their_packed_size(tmp_path):
    shape = {**SMALL, "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 64}
    module, _ = from_pretrained(write_random_checkpoint(tmp_path / "m", shape, seed=4, dtype="float32"), 64)
    # the int4 table (--embedding auto's with int4 weights), which the tied LM head reads too
    weights = quantize_module(module, QuantRecipe.for_quant("int4", group_size=128, embedding="int4"))
    entries = coreml.export_coreml(module, weights, tmp_path, 64, chunk_bytes=2_000_000)
    assert len({e["file"] for e in entries}) == 3  # embed_head and two chunks of one layer
    packed = sum(qt.q.numel() * qt.bits // 8 + qt.scales.numel() * 2 for qt in weights.values())
    others = sum(p.numel() * 2 for name, p in module.named_parameters()
                 if name not in weights and name != "lm_head.weight")
    size = sum(p.stat().st_size for p in tmp_path.glob("*.mlpackage/**/*") if p.is_file())
    assert size <= 1.15 * (packed + others), (size, packed + others)


def test_backend_chains_what_it_would_run_on_macos():
    """CoreMLBackend's calls, with coremltools' predictions stood in for by arithmetic (hidden states are the token
    ids plus 1000 per chunk; logits one-hot there): every chunk with its own state, the last real row's logits."""
    from runtimes.backends.coreml import CoreMLBackend

    log = []

    class Function:
        def __init__(self, call):
            self.call = call

        def predict(self, feeds, state=None):
            log.append((self.call.name, state, int(feeds["position"][0]) if "position" in feeds else None))
            if "input_ids" in feeds:
                return {self.call.output: feeds["input_ids"][..., None].astype(np.float32)}
            if self.call.function == "logits":
                return {"logits": np.eye(4096, dtype=np.float16)[int(feeds["hidden_states"].ravel()[0])][None, None]}
            return {self.call.output: feeds["hidden_states"] + 1000}

        def make_state(self):
            return f"state of {self.call.file}"

    backend = object.__new__(CoreMLBackend)  # what __init__ does after loading, minus Core ML
    backend.plan = CoreMLPlan.from_manifest(json.loads(PLAN_FIXTURE.read_text())["manifest"])  # tiny int4, 2 chunks
    backend.models = {c.name: Function(c) for chain in backend.plan.chains.values() for c in chain}
    backend.models["embed_head.logits"] = Function(backend.plan.logits)
    backend.reset()
    assert backend.prefill(list(range(1, 71))).argmax() == 2070 and backend.position == 70
    states = {"chunk_0.mlpackage": "state of chunk_0.mlpackage", "chunk_1.mlpackage": "state of chunk_1.mlpackage"}
    assert log == [("embed_head.prefill", None, None), ("chunk_0.prefill", states["chunk_0.mlpackage"], 0),
                   ("chunk_1.prefill", states["chunk_1.mlpackage"], 0)] + \
        [("embed_head.prefill", None, None), ("chunk_0.prefill", states["chunk_0.mlpackage"], 64),
         ("chunk_1.prefill", states["chunk_1.mlpackage"], 64), ("embed_head.logits", None, None)]
    log.clear()
    assert backend.decode(9).argmax() == 2009
    assert [name for name, *_ in log] == ["embed_head.decode", "chunk_0.decode", "chunk_1.decode", "embed_head.logits"]
    assert backend.prefill([3, 4, 5], all_logits=True).argmax(-1).tolist() == [2003, 2004, 2005]


def test_prediction_off_macos_is_a_clear_error(bundles):
    if sys.platform == "darwin":
        pytest.skip("prediction works here")
    with pytest.raises(UserError, match="Core ML prediction needs macOS"):
        load_backend(bundles["int4"])


@pytest.mark.parametrize("argv, message", [
    (["--asymmetric"], "symmetric weights only"),
    (["--profile", "npu"], "--profile is an onnx option"),
    (["--quant", "8da4w"], "use --quant int4"),
    (["--quant", "fp32"], "states, which are fp16 only"),
])
def test_unsupported_options_fail_before_work(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "coreml", *argv, "--out", str(tmp_path / "x"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@on_macos
@pytest.mark.parametrize("quant", QUANTS)
def test_parity_on_macos(bundles, quant, capsys, tmp_path):
    report_path = tmp_path / "p.json"
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundles[quant]), "--json", str(report_path))
    assert code == 0, out
    assert json.loads(report_path.read_text())["teacher_forced_top1_agreement"] >= 0.99


@pytest.mark.slow
def test_target_all_writes_one_complete_bundle_per_target(tmp_path, capsys):
    """fp32 for every target: Core ML's bundle is fp16 (its states are fp16 only) and its manifest says so."""
    pytest.importorskip("executorch")
    code, out, _ = run_cli(capsys, "--model", "tiny", "--target", "all", "--quant", "fp32", "--max-seq-len", "128",
                           "--out", str(tmp_path / "all"))
    assert code == 0 and "all (onnx (cpu), executorch (xnnpack), coreml)" in out
    for target in ("onnx", "executorch", "coreml"):
        manifest = read_manifest(tmp_path / "all" / target)
        assert manifest["target"] == target and check_files(tmp_path / "all" / target, manifest) == []
        assert (manifest["quant"]["name"], manifest["quant"]["bits"]) == (("fp16", 16) if target == "coreml"
                                                                          else ("fp32", 32))


@pytest.mark.slow
def test_export_is_deterministic(bundles, tmp_path, monkeypatch):
    """The same checkpoint, flags and library versions give byte-identical files."""
    from tests.conftest import file_hashes

    again = export_tiny(tmp_path / "again", "int4", monkeypatch, TWO_CHUNKS)
    assert file_hashes(again) == file_hashes(bundles["int4"])


def write_plan_fixture(bundle: Path) -> None:
    """(Re)write ios-demo's coreml_plan.json from a tiny int4 bundle in two chunks."""
    manifest = read_manifest(bundle)
    plan = CoreMLPlan.from_manifest(manifest)
    fixture = {"about": "tests/test_coreml.py writes this (python -m tests.test_coreml) from a tiny int4 Core ML "
                        "export in two chunks; the Swift core's CoreMLPlan must agree with it",
               "manifest": manifest, "chains": {step: [c.name for c in plan.chains[step]] for step in ("prefill", "decode")},
               "cases": _plan_cases(plan)}
    PLAN_FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    PLAN_FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_plan_fixture(export_tiny(Path(tmp) / "int4", "int4", pytest.MonkeyPatch(), TWO_CHUNKS))
