"""RTN and AWQ quantization, the quantized checkpoint format, calibration inputs."""

import copy
import json

import pytest
import torch

from calibration.datasets import calibration_set
from exporter.make_model import write_random_checkpoint
from runtimes.model import from_pretrained
from runtimes.quant.awq import AWQConfig, awq_quantize, search_scale
from runtimes.quant.packing import pack_int4, unpack_int4
from runtimes.quant.rtn import dequantize, fake_quantize, quantize
from runtimes.quant.recipe import QuantRecipe, apply_fake_quant, load_module, quantize_module
from runtimes.errors import UserError
from tests.conftest import SMALL, run_cli


@pytest.mark.parametrize("bits, group_size, symmetric", [
    (8, None, True), (4, 32, True), (4, 64, True), (4, 128, True), (4, 32, False), (4, 128, False),
])
def test_rtn_codes_and_error_bound(bits, group_size, symmetric):
    w = torch.randn(48, 256) * torch.linspace(0.1, 3, 256)  # channels of different ranges
    qt = quantize(w, bits, group_size, symmetric)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    assert qt.q.min() >= lo and qt.q.max() <= hi
    assert qt.scales.shape == (48, 256 // (group_size or 256))
    err = (dequantize(qt) - w).abs().reshape(48, -1, group_size or 256)
    # round to nearest: never more than half a step (plus float slack)
    assert (err <= qt.scales.unsqueeze(-1) / 2 + 1e-6).all()


def test_int4_packing_round_trip():
    for signed in (True, False):
        codes = torch.randint(-8 if signed else 0, 8 if signed else 16, (7, 64), dtype=torch.int16)
        codes = codes.to(torch.int8 if signed else torch.uint8)
        packed = pack_int4(codes, signed)
        assert packed.dtype == torch.uint8 and packed.shape == (7, 32)
        assert torch.equal(unpack_int4(packed, signed), codes)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("q")
    return {"gqa": write_random_checkpoint(base / "gqa", SMALL, seed=11, dtype="float32"),
            "mha": write_random_checkpoint(base / "mha", {**SMALL, "num_key_value_heads": 4}, seed=12,
                                           dtype="float32")}


@pytest.mark.parametrize("kind", ["gqa", "mha"])
def test_awq_folding_is_exact_in_full_precision(model_dirs, kind):
    module, _ = from_pretrained(model_dirs[kind], max_seq_len=64)
    original = copy.deepcopy(module)
    tokens = torch.randint(0, SMALL["vocab_size"], (6, 48), generator=torch.Generator().manual_seed(0))
    _, report = awq_quantize(module, tokens, AWQConfig(group_size=32), progress=False)
    assert ("layers.0.o" in report.alphas) == (kind == "mha")  # v->o only without GQA
    assert any(a > 0 for a in report.alphas.values())  # some scaling really happened
    ids = torch.randint(0, SMALL["vocab_size"], (40,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (original.prefill(ids) - module.prefill(ids)).abs().max() <= 1e-4


def test_awq_scale_search_beats_plain_rtn_on_outlier_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 128, generator=g)
    x[:, :4] *= 30  # a few salient input channels, as LLM activations have
    w = torch.randn(64, 128, generator=g) * 0.05
    cfg = AWQConfig(group_size=32)
    s, alpha = search_scale(x, [w], cfg)
    reference = x @ w.T
    rtn_err = (x @ fake_quantize(w, 4, 32).T - reference).pow(2).mean()
    awq_err = (x @ (fake_quantize(w * s, 4, 32) / s).T - reference).pow(2).mean()
    assert alpha > 0 and awq_err < 0.8 * rtn_err


def test_quantized_checkpoint_round_trip(model_dirs, tmp_path, capsys):
    qdir = tmp_path / "qdir"
    code, out, err = run_cli(capsys, "quantize", "--model", str(model_dirs["gqa"]), "--quant", "int4",
                             "--group-size", "32", "--out", str(qdir))
    assert code == 0, err
    recipe = json.loads((qdir / "quant_recipe.json").read_text())["recipe"]
    assert (recipe["method"], recipe["bits"], recipe["group_size"], recipe["embedding"]) == ("rtn", 4, 32, "int4")
    # loading QDIR gives exactly the fake-quant module of the source (quantize's default table is int4 with int4)
    module, _ = from_pretrained(model_dirs["gqa"], max_seq_len=64)
    apply_fake_quant(module, quantize_module(module, QuantRecipe.for_quant("int4", 32, embedding="int4")))
    loaded, _ = load_module(qdir, max_seq_len=64)
    ids = torch.arange(30)
    with torch.no_grad():
        assert torch.equal(module.prefill(ids), loaded.prefill(ids))
    fp32_bytes = (model_dirs["gqa"] / "model.safetensors").stat().st_size
    assert (qdir / "model.safetensors").stat().st_size < fp32_bytes / 4
    # quantizing a quantized checkpoint is refused
    code, _, err = run_cli(capsys, "quantize", "--model", str(qdir), "--quant", "int4", "--out", str(tmp_path / "x"))
    assert code == 2 and "already quantized" in err


def test_calibration_sources_and_errors(tmp_path, tiny_tokenizer):
    encode = tiny_tokenizer.encode
    a = calibration_set("arithmetic", encode, samples=4, seq_len=64)
    b = calibration_set("arithmetic", encode, samples=4, seq_len=64)
    assert a.tokens.shape == (4, 64) and torch.equal(a.tokens, b.tokens) and a.sha256 == b.sha256
    assert calibration_set("builtin", encode, samples=2, seq_len=32).tokens.shape == (2, 32)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "What is 1 + 2?"}\n{"messages": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "<think>\\nx\\n</think>\\n\\n3"}]}\n')
    assert calibration_set(str(good), encode, samples=2, seq_len=8).tokens.shape == (2, 8)
    cases = {
        "empty.txt": ("", "is empty"),
        "short.txt": ("hi", "fewer than one window"),
        "bad.jsonl": ('{"text": "ok"}\n{not json}\n', "bad.jsonl:2: not valid JSON"),
        "shape.jsonl": ('{"prompt": "x"}\n', 'shape.jsonl:1: expected {"text"'),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace("{", r"\{")):
            calibration_set(str(path), encode, samples=2, seq_len=64)
    with pytest.raises(UserError, match="missing.txt does not exist"):
        calibration_set(str(tmp_path / "missing.txt"), encode)


def test_group_size_must_divide_every_linear_input(capsys, tmp_path):
    model_dir = write_random_checkpoint(tmp_path / "hd", {**SMALL, "head_dim": 24}, dtype="float32")  # 4 x 24 = 96
    code, _, err = run_cli(capsys, "quantize", "--model", str(model_dir), "--quant", "int4", "--group-size", "64",
                           "--out", str(tmp_path / "q"))
    assert code == 2 and "heads x head_dim 96" in err and not (tmp_path / "q").exists()
    # without --group-size, the largest that fits is chosen: 32 divides 64, 160 and 96
    assert run_cli(capsys, "quantize", "--model", str(model_dir), "--quant", "int4", "--out", str(tmp_path / "q"))[0] == 0
    assert json.loads((tmp_path / "q" / "quant_recipe.json").read_text())["recipe"]["group_size"] == 32


@pytest.mark.parametrize("embedding", ["int4", "none"])
def test_lazy_loading_quantizes_what_eager_loading_does(model_dirs, embedding):
    """Exports read each linear from the file only when quantizing it (never the whole float model at once);
    the codes are the ones an eagerly loaded module gives, and an unquantized table gets its values back."""
    recipe = QuantRecipe.for_quant("int4", group_size=32, embedding=embedding)
    lazy, _ = from_pretrained(model_dirs["gqa"], max_seq_len=16, lazy_linears=True)
    assert lazy.layers[0].mlp.up_proj.weight.is_meta and lazy.embed_tokens.weight.is_meta
    assert not lazy.layers[0].input_layernorm.weight.is_meta
    eager, _ = from_pretrained(model_dirs["gqa"], max_seq_len=16)
    got = quantize_module(lazy, recipe, progress=False, release=True)
    want = quantize_module(eager, recipe, progress=False)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name].q, want[name].q) and torch.equal(got[name].scales, want[name].scales), name
    if embedding == "none":
        assert torch.equal(lazy.embed_tokens.weight, eager.embed_tokens.weight)
        assert lazy.lm_head.weight is lazy.embed_tokens.weight
    assert not lazy.lazy_weights  # every lazy tensor was read exactly once


def test_awq_device_flag(capsys, tmp_path):
    """cuda where torch sees no GPU is a one-line error; the CPU search records where it ran."""
    code, _, err = run_cli(capsys, "quantize", "--model", "tiny", "--quant", "awq-int4", "--device", "cuda",
                           "--out", str(tmp_path / "q"))
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the error path cannot be shown here")
    assert code == 2 and "--device cuda" in err and "sees no CUDA GPU" in err and not (tmp_path / "q").exists()


def test_awq_runs_on_the_recipes_device(model_dirs, monkeypatch):
    """quantize_module hands AWQ the device the recipe records (what --device sets)."""
    import runtimes.quant.awq as awq
    import runtimes.quant.recipe as recipe_module

    seen = {}

    def fake(module, tokens, cfg, progress=True, device="cpu"):
        seen["device"] = device
        return {}, awq.AWQReport()

    monkeypatch.setattr(recipe_module, "awq_quantize", fake)
    module, _ = from_pretrained(model_dirs["gqa"], max_seq_len=16)
    recipe = QuantRecipe.for_quant("awq-int4", group_size=32)
    recipe.calibration = {"device": "cuda"}
    quantize_module(module, recipe, torch.zeros(1, 8, dtype=torch.long), progress=False)
    assert seen == {"device": "cuda"}
