"""The ExecuTorch target: .pte bundles run in ExecuTorch's runtime, match their reference, and delegate to XNNPACK."""

import json

import pytest
import torch

from exporter.make_model import write_random_checkpoint
from runtimes.model import from_pretrained
from runtimes.quant.recipe import QuantRecipe, quantize_module
from runtimes.bundle import load_backend, read_manifest, check_files
from tests.conftest import ET_8DA4W, SMALL, run_cli

import executorch  # noqa: F401  (a required backend: its absence fails the run, it is never skipped)

# int4 and 8da4w lower to the same program (RTN int4 weights, 8-bit dynamic activations): 8da4w stands for both
QUANTS = ("fp32", "fp16", "int8", "8da4w")


class Bundles:
    """tiny's ExecuTorch bundles by quant, exported on first use: the fast tests need only 8da4w (shared with other
    test files), the slow ones the rest."""

    def __init__(self, shared_export):
        self.shared_export = shared_export

    def flags(self, quant: str) -> tuple[str, ...]:
        return ET_8DA4W if quant == "8da4w" else (*ET_8DA4W[:5], quant, *ET_8DA4W[6:])

    def __getitem__(self, quant: str):
        return self.shared_export(*self.flags(quant))


@pytest.fixture(scope="module")
def bundles(shared_export):
    return Bundles(shared_export)


def test_an_export_keeps_the_libraries_quiet(shared_export):
    """torchao's missing-kernel notes, torch's deprecations and ExecuTorch's cpuinfo lines are not for users
    (--verbose shows them); the export printed nothing of them."""
    shared_export(*ET_8DA4W)
    noise = [line for line in shared_export.stderr[ET_8DA4W].splitlines()
             if any(word in line for word in ("Failed to load", "KernelPreference", "cpuinfo", "Warning", "W1"))]
    assert noise == []


@pytest.mark.slow
@pytest.mark.parametrize("quant", [q for q in QUANTS if q != "fp16"])
def test_bundle_passes_parity(bundles, quant, capsys, tmp_path):
    report_path = tmp_path / "p.json"
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundles[quant]), "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert code == 0, out
    assert (report["target"], report["backend"], report["quant"]) == ("executorch", "executorch", quant)
    if quant == "fp32":  # same weights, same math: exact up to float reordering
        assert report["greedy_token_match"] == 1.0 and report["max_abs_logit_diff"] <= 1e-3
        assert report["reference"] == "fp32"
    else:
        assert report["teacher_forced_top1_agreement"] >= 0.99
    if quant in ("int8", "8da4w"):  # the reference models the kernels' 8-bit activations and the int8 cache
        assert report["reference"] == f"fake-quant {quant} (int8-dynamic-per-token activations), int8 KV cache"


@pytest.mark.slow
def test_fp16_bundle_meets_the_bar_or_misses_only_at_near_ties(bundles, capsys, tmp_path):
    """XNNPACK's fp16 linears may round the running sum to fp16 after every multiply-add; how often that flips
    an argmax depends on the CPU's kernels (on one x86 CPU tiny's fp16 bundle scored 98.5% top-1, on an AVX-512
    one 100%). Whatever the CPU: greedy tokens match, KL stays tiny, and every disagreement is at a near-tie of
    the reference's top two logits (a rounding, not a wrong computation); the 99% bar decides pass or fail."""
    report_path = tmp_path / "p.json"
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundles["fp16"]), "--json", str(report_path))
    report = json.loads(report_path.read_text())
    passed = report["teacher_forced_top1_agreement"] >= 0.99
    assert (code, report["passed"]) == ((0, True) if passed else (1, False)), out
    assert report["greedy_token_match"] == 1.0 and report["mean_kl"] < 2e-4, out
    assert report["teacher_forced_top1_agreement"] >= 0.98, out
    flips = [d for p in report["prompts"] for d in p["teacher_forced"]["disagreements"]]
    assert len(flips) == report["top1_disagreements"]
    assert all(d["reference_margin"] < 0.05 for d in flips), flips


def test_manifest_records_what_the_kernels_do(bundles):
    from runtimes.verify import verify

    manifest = read_manifest(bundles["8da4w"])
    assert check_files(bundles["8da4w"], manifest) == []
    result = verify(bundles["8da4w"])
    assert result["ok"] and result["generation"] is not None, result
    assert (manifest["target"], manifest["backend"], manifest["profile"]) == ("executorch", "executorch", "xnnpack")
    assert manifest["quant"]["activations"] == "int8-dynamic-per-token"
    assert manifest["quant"]["int4_scale_dtype"] == "bfloat16"
    entry = manifest["entry_points"][0]
    assert entry["file"] == "model.pte" and [i["name"] for i in entry["inputs"]] == ["tokens", "input_pos"]


@pytest.mark.slow
def test_float_manifests_record_their_dtypes(bundles):
    assert "activations" not in read_manifest(bundles["fp32"])["quant"]
    assert read_manifest(bundles["fp16"])["kv_cache"]["dtype"] == "float16"


def test_program_carries_llm_runner_metadata(bundles, tiny_tokenizer):
    from runtimes.backends.executorch import _runtime

    module = _runtime()._load_for_executorch(str(bundles["8da4w"] / "model.pte"))
    meta = {name: module.run_method(name, ())[0] for name in
            ("get_max_seq_len", "get_vocab_size", "use_kv_cache", "enable_dynamic_shape", "get_bos_id")}
    vocab = read_manifest(bundles["8da4w"])["architecture"]["vocab_size"]
    assert meta == {"get_max_seq_len": 256, "get_vocab_size": vocab, "use_kv_cache": True,
                    "enable_dynamic_shape": True, "get_bos_id": tiny_tokenizer.special.endoftext}
    assert sorted(module.run_method("get_eos_ids", ())) == sorted(tiny_tokenizer.special.stop)


def test_backend_rewinds_and_refuses_overflow(bundles):
    backend = load_backend(bundles["8da4w"])
    first = backend.prefill([1, 2, 3, 4])
    backend.decode(5)
    backend.reset()
    assert backend.position == 0
    assert (backend.prefill([1, 2, 3, 4]) == first).all()
    from runtimes.errors import UserError

    with pytest.raises(UserError, match="exceed the bundle's context of 256"):
        backend.prefill(list(range(300)))


@pytest.fixture(scope="module")
def small_module(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", SMALL, seed=3, dtype="float32")
    module, _ = from_pretrained(path, max_seq_len=64)
    return module


@pytest.mark.parametrize("quant", [pytest.param("int8", marks=pytest.mark.slow), "int4"])
def test_quantized_linears_run_inside_xnnpack(small_module, quant):
    """Every linear (and its dequantize) is inside a delegate: nothing low-bit falls back to portable kernels."""
    from exporter.targets.executorch import Program, delegation, lower

    weights = quantize_module(small_module, QuantRecipe.for_quant(quant, group_size=32))
    report = delegation(lower(small_module, weights, Program(64), bos_id=0, eos_ids=[1]))
    assert report["outside"] == [] and report["delegate_calls"] >= 2 * SMALL["num_hidden_layers"]


def test_weight_only_dequantize_would_not_be_delegated(small_module):
    """Why int8/int4 run with 8-bit activations here: a weight-only dequantize + matmul stays outside XNNPACK."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor
    from torchao.utils import unwrap_tensor_subclass

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    qt = quantize_module(small_module, QuantRecipe.for_quant("int4", group_size=32))["layers.0.mlp.up_proj.weight"]
    linear = torch.nn.Linear(qt.shape[1], qt.shape[0], bias=False)
    linear.weight = torch.nn.Parameter(IntxUnpackedToInt8Tensor(
        qt.q, qt.scales, torch.zeros_like(qt.scales, dtype=torch.int8), torch.int4, (1, 32), torch.float32, None),
        requires_grad=False)
    model = unwrap_tensor_subclass(torch.nn.Sequential(linear))
    edge = to_edge_transform_and_lower(torch.export.export(model, (torch.randn(1, 3, qt.shape[1]),)),
                                       partitioner=[XnnpackPartitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    from exporter.targets.executorch import delegation

    assert any("dequantize" in op for op in delegation(edge)["outside"])


@pytest.mark.slow
def test_int4_program_is_near_its_packed_size(tmp_path):
    """The .pte holds 4-bit weights: its size is the packed weights plus what the program needs twice (the int8
    table, once to gather and once in XNNPACK's head), within 15%."""
    from exporter.targets.executorch import MODEL_FILE, Program, export_executorch

    shape = {**SMALL, "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 64}
    module, _ = from_pretrained(write_random_checkpoint(tmp_path / "m", shape, seed=4, dtype="float32"), 64)
    weights = quantize_module(module, QuantRecipe.for_quant("int4", group_size=128))
    export_executorch(module, weights, tmp_path, Program(64), bos_id=0, eos_ids=[1])
    packed = sum(qt.q.numel() * qt.bits // 8 + qt.scales.numel() * (2 if qt.bits == 4 else 4)
                 for qt in weights.values())
    packed += weights["embed_tokens.weight"].q.numel() + 4 * weights["embed_tokens.weight"].scales.numel()
    others = sum(p.numel() * 4 for name, p in module.named_parameters()
                 if name not in weights and name != "lm_head.weight")
    size = (tmp_path / MODEL_FILE).stat().st_size
    assert size <= 1.15 * (packed + others), (size, packed + others)


def test_qnn_without_its_sdk_says_what_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "executorch", "--delegate", "qnn",
                           "--out", str(tmp_path / "q"))
    assert code == 2 and "needs Qualcomm's QNN SDK" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_coreml_delegate_puts_the_linears_in_core_ml(small_module, tmp_path, capsys):
    """Lowered here (coremltools converts on Linux); not executed: the Core ML delegate runs on Apple devices."""
    import coremltools  # noqa: F401
    from exporter.targets.executorch import Program, delegation, lower

    weights = quantize_module(small_module, QuantRecipe.for_quant("int4", group_size=32))
    report = delegation(lower(small_module, weights, Program(64, delegate="coreml"), bos_id=0, eos_ids=[1]))
    assert report["outside"] == [] and report["delegate_calls"] >= 1
    code, _, _ = run_cli(capsys, "--model", "tiny", "--target", "executorch", "--quant", "int4", "--delegate",
                         "coreml", "--max-seq-len", "128", "--out", str(tmp_path / "cm"))
    assert code == 0
    manifest = read_manifest(tmp_path / "cm")
    assert manifest["profile"] == "coreml" and "activations" not in manifest["quant"]
    assert manifest["quant"]["int4_scale_dtype"] == "float16"
    assert manifest["entry_points"][0]["inputs"][0]["shape"] == [1, 1]
    from runtimes.backends.executorch import _runtime
    from runtimes.errors import UserError

    program = _runtime()._load_for_executorch(str(tmp_path / "cm" / "model.pte"))
    assert program.run_method("enable_dynamic_shape", ())[0] is False
    with pytest.raises(UserError, match="delegated to coreml, which runs on the device"):
        load_backend(tmp_path / "cm")


@pytest.mark.parametrize("argv, message", [
    (["--quant", "int4", "--asymmetric"], "symmetric weights only"),
    (["--profile", "npu"], "--profile is an onnx option"),
])
def test_unsupported_combinations_fail_before_work(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "executorch", *argv, "--out", str(tmp_path / "x"))
    assert code == 2 and message in err
    assert not (tmp_path / "x").exists()


def test_8da4w_is_an_executorch_scheme(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--quant", "8da4w", "--out", str(tmp_path))
    assert code == 2 and "use --quant int4" in err


@pytest.mark.slow
def test_export_is_deterministic(bundles, tmp_path):
    """The same checkpoint, flags and library versions give byte-identical files."""
    from exporter.cli import main
    from tests.conftest import file_hashes

    assert main(["--model", "tiny", "--target", "executorch", "--quant", "8da4w", "--max-seq-len", "256",
                 "--out", str(tmp_path / "again")]) == 0
    assert file_hashes(tmp_path / "again") == file_hashes(bundles["8da4w"])
