"""The Core ML target. On Linux (no Core ML prediction) everything but prediction is checked: the spec, its I/O
and states against the manifest, the MIL program, our exact codes and scales in the file, the size, and the
traced formulation's numerics in PyTorch. On macOS the bundles also run and pass parity (the macOS CI job)."""

import json
import sys

import numpy as np
import pytest
import torch

from exporter.make_model import write_random_checkpoint
from runtimes.model import from_pretrained
from runtimes.quant.recipe import QuantRecipe, apply_fake_quant, quantize_module
from runtimes.bundle import load_backend, read_manifest, check_files
from runtimes.errors import UserError
from tests.conftest import SMALL, run_cli

pytest.importorskip("coremltools")
from runtimes.backends.coreml import causal_mask, validate_bundle  # noqa: E402

QUANTS = ("fp16", "int8", "int4")
on_macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS 15+")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from exporter.cli import main

    base = tmp_path_factory.mktemp("coreml")
    for quant in QUANTS:
        assert main(["--model", "tiny", "--target", "coreml", "--quant", quant, "--max-seq-len", "256",
                     "--out", str(base / quant)]) == 0
    return {quant: base / quant for quant in QUANTS}


@pytest.mark.parametrize("quant", QUANTS)
def test_spec_matches_manifest_and_validates(bundles, quant):
    manifest = read_manifest(bundles[quant])
    assert check_files(bundles[quant], manifest) == []
    assert (manifest["target"], manifest["backend"]) == ("coreml", "coreml")
    assert manifest["kv_cache"]["dtype"] == "float16"
    report = validate_bundle(bundles[quant], manifest)
    assert report["problems"] == []
    from runtimes.verify import verify

    assert verify(bundles[quant])["ok"]
    assert report["spec_version"] >= 9  # iOS 18 / macOS 15: the first with states
    states = {s["name"]: s["shape"] for s in manifest["entry_points"][0]["states"]}
    arch = manifest["architecture"]
    assert states == {name: [arch["num_hidden_layers"], arch["num_key_value_heads"], 256, arch["head_dim"]]
                      for name in ("k_cache", "v_cache")}


def test_validation_catches_a_manifest_that_lies(bundles):
    manifest = json.loads((bundles["fp16"] / "manifest.json").read_text())
    manifest["entry_points"][0]["states"][0]["shape"][2] = 512
    manifest["entry_points"][0]["inputs"][0]["name"] = "tokens"
    problems = validate_bundle(bundles["fp16"], manifest)["problems"]
    assert any("k_cache" in p and "shape" in p for p in problems)
    assert any(p.startswith("inputs:") for p in problems)


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_file_holds_our_exact_codes_and_scales(bundles, quant):
    from exporter.export import prepare

    manifest = read_manifest(bundles[quant])
    q = manifest["quant"]
    _, weights, *_ = prepare("tiny", quant, q["group_size"], True, q["embedding"], "builtin", 128, 512, 256,
                             progress=False)
    stored = {(codes.shape, np.asarray(codes, dtype=np.int8).tobytes()): scales
              for codes, scales in validate_bundle(bundles[quant], manifest)["quantized"]}
    assert len(stored) == len(weights)  # the tied LM head reads the embedding's table: stored once
    for name, qt in weights.items():
        scales = stored.get((tuple(qt.q.shape), qt.q.numpy().astype(np.int8).tobytes()))
        assert scales is not None, f"{name}: codes not found in the file"
        assert np.array_equal(np.asarray(scales).reshape(qt.scales.shape), qt.scales.half().numpy()), name
    assert q[f"int{4 if quant == 'int4' else 8}_scale_dtype"] == "float16"


def test_fp16_bundle_has_no_quantized_ops(bundles):
    report = validate_bundle(bundles["fp16"], read_manifest(bundles["fp16"]))
    assert report["quantized"] == [] and report["ops"].get("linear", 0) > 0


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_traced_formulation_matches_the_reference(quant):
    """The module coremltools converts, run in PyTorch: chunked prefill through the mask-defined positions and
    the fp16 state cache, then decode steps, against the fake-quant reference with fp16 scales."""
    from exporter.targets.coreml import StatefulQwen3

    reference, _ = from_pretrained("tiny", max_seq_len=64)
    weights = {} if quant == "fp32" else quantize_module(reference, QuantRecipe.for_quant("int4", group_size=64))
    program = StatefulQwen3(reference, weights, 64).eval()
    apply_fake_quant(reference, weights, int4_scale_dtype="float16", int8_scale_dtype="float16")
    ids = torch.randint(0, reference.args.vocab_size, (24,))
    with torch.no_grad():
        expected = reference.prefill(ids, 0)[0]
        rows, start = [], 0
        for size in (16, 5, 1, 1, 1):  # a chunk, a short chunk, then decode steps
            mask = torch.from_numpy(causal_mask(start, size).astype(np.float32))
            rows.append(program(ids[start:start + size].view(1, -1).int(), mask)[0])
            start += size
        got = torch.cat(rows)
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99
    assert (got - expected).abs().max() < 0.05  # the fp16 cache rounds keys and values


@pytest.mark.slow
def test_int4_package_is_near_its_packed_size(tmp_path):
    from exporter.targets.coreml import MODEL_FILE, export_coreml

    shape = {**SMALL, "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 64}
    module, _ = from_pretrained(write_random_checkpoint(tmp_path / "m", shape, seed=4, dtype="float32"), 64)
    weights = quantize_module(module, QuantRecipe.for_quant("int4", group_size=128))
    export_coreml(module, weights, tmp_path, 64)
    packed = sum(qt.q.numel() * qt.bits // 8 + qt.scales.numel() * 2 for qt in weights.values())
    others = sum(p.numel() * 2 for name, p in module.named_parameters()
                 if name not in weights and name != "lm_head.weight")
    size = sum(p.stat().st_size for p in (tmp_path / MODEL_FILE).rglob("*") if p.is_file())
    assert size <= 1.15 * (packed + others), (size, packed + others)


def test_prediction_off_macos_is_a_clear_error(bundles):
    if sys.platform == "darwin":
        pytest.skip("prediction works here")
    with pytest.raises(UserError, match="Core ML prediction needs macOS"):
        load_backend(bundles["int4"])


@pytest.mark.parametrize("argv, message", [
    (["--asymmetric"], "symmetric weights only"),
    (["--profile", "npu"], "--profile is an onnx option"),
    (["--quant", "8da4w"], "use --quant int4"),
])
def test_unsupported_options_fail_before_work(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "coreml", *argv, "--out", str(tmp_path / "x"))
    assert code == 2 and message in err
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
    pytest.importorskip("executorch")
    code, out, _ = run_cli(capsys, "--model", "tiny", "--target", "all", "--quant", "fp32", "--max-seq-len", "128",
                           "--out", str(tmp_path / "all"))
    assert code == 0 and "all (onnx (cpu), executorch (xnnpack), coreml)" in out
    for target in ("onnx", "executorch", "coreml"):
        manifest = read_manifest(tmp_path / "all" / target)
        assert manifest["target"] == target and check_files(tmp_path / "all" / target, manifest) == []


@pytest.mark.slow
def test_export_is_deterministic(bundles, tmp_path):
    """The same checkpoint, flags and library versions give byte-identical files."""
    from exporter.cli import main
    from tests.conftest import file_hashes

    assert main(["--model", "tiny", "--target", "coreml", "--quant", "int4", "--max-seq-len", "256",
                 "--out", str(tmp_path / "again")]) == 0
    assert file_hashes(tmp_path / "again") == file_hashes(bundles["int4"])
