"""The int8 KV cache of `--target executorch --kv-cache int8`: our kernels (runtimes/kernels/kv8_attention.cpp, run in
ExecuTorch's runtime) against their torch definition (exporter/targets/kv8_ops.py), and the bundle end to end."""

import json
import shutil

import numpy as np
import pytest
import torch

from runtimes.bundle import read_manifest
from runtimes.quant.kv import fake_quant
from tests.conftest import ROOT, run_cli

HEADS, KV_HEADS, DIM, CAPACITY = 4, 2, 32, 96


def scales() -> torch.Tensor:
    return torch.rand(2, KV_HEADS, DIM, generator=torch.Generator().manual_seed(1)) * 0.02 + 0.005


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The step as a .pte (dynamic length), loaded in ExecuTorch's runtime with our kernels."""
    from exporter.targets.executorch import int8_attention_program
    from runtimes.backends.executorch import _runtime
    from runtimes.backends.executorch_kernels import load_kv8_kernels

    path = tmp_path_factory.mktemp("kv8") / "attention.pte"
    int8_attention_program(scales(), HEADS, CAPACITY, path)
    load_kv8_kernels()
    return _runtime()._load_for_executorch(str(path))


def bound(positions: int, values: torch.Tensor) -> float:
    """How far two float32 evaluations of the same attention may differ: each output is a convex combination of
    `positions` values, each weight from a DIM-term dot product, an exp and a normalization, so summation order (and
    fused multiply-adds) moves it by at most ~(DIM + 2 x positions) roundings of the largest value; x4 for the exp
    approximation's and the division's own rounding. A wrong mask, scale or code is off by orders of magnitude more."""
    return 4 * (DIM + 2 * positions) * 2.0 ** -23 * float(values.abs().max())


def test_the_kernels_compute_the_torch_definition(program):
    """A prompt from position 0, decode steps, then a second prompt on top (a chat's next turn): every call's output
    equals the torch definition's within float32 reassociation."""
    torch.manual_seed(0)
    from exporter.targets.executorch import Int8AttentionStep

    reference = Int8AttentionStep(CAPACITY, scales()).eval()
    position = 0
    for steps in (40, 1, 1, 5, 1):
        q, k, v = torch.randn(1, steps, HEADS, DIM), torch.randn(1, steps, KV_HEADS, DIM) * 2, \
            torch.randn(1, steps, KV_HEADS, DIM) * 2
        got = program.forward((q, k, v, torch.tensor([position])))[0]
        with torch.no_grad():
            want = reference(q, k, v, torch.tensor([position]))
        position += steps
        values = fake_quant(reference.attend.v_cache[:, :, :position].float(), 1.0) * scales()[1][None, :, None]
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= bound(position, values), (steps, position)


def test_the_torch_definition_rounds_as_the_reference_cache():
    """kv8_update's codes x scale are the parity reference's fake-quant values exactly (same rounding: half to
    even, clamped to int8), including values past the calibrated range."""
    from exporter.targets.kv8_ops import codes

    s = scales()[0]
    x = torch.randn(1, 7, KV_HEADS, DIM) * 3
    x[0, 0, 0, :4] = torch.tensor([0.5, 1.5, -2.5, 1e3]) * s[0, :4]  # ties and saturation
    stored = codes(x, s).float() * s[None, :, None, :]
    assert torch.equal(stored, fake_quant(x.transpose(1, 2), s[:, None, :]))


@pytest.mark.slow
def test_an_int8_cache_bundle_passes_verify_and_parity(tmp_path, capsys):
    bundle = tmp_path / "et8"
    code, _, err = run_cli(capsys, "--target", "executorch", "--quant", "8da4w", "--kv-cache", "int8",
                           "--max-seq-len", "256", "--out", str(bundle))
    assert code == 0, err
    manifest = read_manifest(bundle)
    assert manifest["kv_cache"]["dtype"] == "int8" and (bundle / "kv_scales.npy").is_file()
    assert {s["dtype"] for s in manifest["entry_points"][0]["states"]} == {"int8"}
    assert np.load(bundle / "kv_scales.npy").shape == (manifest["architecture"]["num_hidden_layers"], 2,
                                                       manifest["architecture"]["num_key_value_heads"],
                                                       manifest["architecture"]["head_dim"])
    code, _, err = run_cli(capsys, "verify", "--bundle", str(bundle))
    assert code == 0, err
    report = tmp_path / "p.json"
    code, _, err = run_cli(capsys, "parity", "--bundle", str(bundle), "--json", str(report))
    assert code == 0 and json.loads(report.read_text())["passed"], err
    # the demo app's stock ExecuTorch (no app/libs/executorch.aar of its own) has no qwen_edge kernels: deploy says
    # so instead of shipping a dead bundle (a copy of the demo: the real one may hold an AAR built with them)
    app = tmp_path / "android-demo"
    app.mkdir()
    shutil.copy(ROOT / "android-demo" / "settings.gradle.kts", app)
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(bundle), "--android", str(app))
    assert code == 2 and "lacks" in err and "build_aar.sh" in err and "--kv-cache float32" in err


def test_the_default_cache_is_int8_where_the_linears_run_int8_activations_on_xnnpack():
    """--kv-cache auto: our int8 cache for quantized linears on XNNPACK (the fast one deep into the context), the
    stock float32 cache ops for exact programs (fp32, fp16) and other delegates; an explicit choice stands."""
    from exporter.options import ExportOptions
    from exporter.targets.executorch_target import int8_cache_for
    from exporter.targets.schemes import SCHEMES

    def chosen(quant, **options):
        return int8_cache_for(ExportOptions("tiny", "executorch", "out", **options), SCHEMES[quant])

    assert all(chosen(q) for q in ("int8", "int4", "awq-int4", "8da4w"))
    assert not any(chosen(q) for q in ("fp32", "fp16"))
    assert not chosen("int4", delegate="coreml") and not chosen("int4", kv_cache="float32")
    assert chosen("fp32", kv_cache="int8")


def test_int8_cache_options_that_cannot_hold_are_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--target", "executorch", "--quant", "fp16", "--kv-cache", "int8",
                           "--out", str(tmp_path / "x"))
    assert code == 2 and "--kv-cache int8 runs on the CPU with float32 activations" in err
    code, _, err = run_cli(capsys, "--target", "executorch", "--kv-cache", "float16", "--out", str(tmp_path / "y"))
    assert code == 2 and "--kv-cache float16: executorch does not store its cache so" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_missing_compiler_is_one_line(capsys, tmp_path, monkeypatch):
    """The kernels are compiled on first use: with no compiler, verify on an int8-cache bundle says so, and leaves
    no half-built library behind."""
    from runtimes.backends.executorch_kernels import library_path
    from runtimes.errors import UserError

    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(UserError, match=r"\$CXX \(.*no-such-g\+\+\) is not a program here"):
        library_path()
    assert not (tmp_path / "cache" / "kernels").exists() or not any((tmp_path / "cache" / "kernels").iterdir())


def test_an_int8_cache_program_leaves_torchs_threads_as_it_found_them(shared_export):
    """Its calls run on one torch thread (libtorch's spinning workers would take ExecuTorch's cores), and the
    process's count comes back after each: a torch model beside it (parity's reference, an export's fixture) keeps
    its threads, and with them its numbers (an export after a parity run in one process was not byte-identical)."""
    from runtimes.bundle import load_backend
    from tests.conftest import ET_8DA4W

    bundle = shared_export(*ET_8DA4W)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        backend = load_backend(bundle)
        backend.prefill([1, 2, 3])
        backend.decode(4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
