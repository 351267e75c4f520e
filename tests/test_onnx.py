"""The ONNX target: bundles of every precision run on ONNX Runtime and match their reference."""

import json

import numpy as np
import onnx
import pytest

from runtimes.checkpoint import resolve_model_dir
from exporter.make_model import SHAPES
from exporter.targets.onnx_cpu import FLOAT_ATTENTION_MIN_TOKENS
from runtimes.quant.packing import unpack_int4
from runtimes.quant.recipe import QuantRecipe, quantize_module
from runtimes.model import from_pretrained
from runtimes.bundle import check_files, read_manifest
from tests.conftest import run_cli


# each recipe with its defaults (quantized: int8 activations, the int4 table with int4 weights), and with the exact
# float-activation graph (--activations float)
VARIANTS = {"fp32": [], "fp16": [], "int8": [], "int4": [], "awq-int4": [], "int8-float": ["--activations", "float"],
            "int4-float": ["--activations", "float"], "int4-kv16": ["--kv-cache", "float16"],
            "int4-float-kv8": ["--activations", "float", "--kv-cache", "int8"], "int4-kv32": ["--kv-cache", "float32"]}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from exporter.cli import main

    base = tmp_path_factory.mktemp("onnx")
    for name, extra in VARIANTS.items():
        argv = ["--model", "tiny", "--target", "onnx", "--quant", name.split("-")[0] if "awq" not in name else name,
                "--group-size", "64", "--calib", "arithmetic", "--samples", "16", "--seq-len", "128", *extra,
                "--out", str(base / name)]
        assert main(argv) == 0
    return {name: base / name for name in VARIANTS}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bundle_passes_parity(bundles, name, capsys, tmp_path):
    report_path = tmp_path / "p.json"
    code, out, err = run_cli(capsys, "parity", "--bundle", str(bundles[name]), "--json", str(report_path))
    report = json.loads(report_path.read_text())
    manifest = read_manifest(bundles[name])
    assert code == 0, out
    assert report["teacher_forced_top1_agreement"] >= 0.99 and report["greedy_token_match"] == 1.0
    if name == "fp16":  # fp16 arithmetic against fp32: close, not exact
        assert 1e-4 < report["max_abs_logit_diff"] < 0.1 and report["mean_kl"] < 1e-4
    elif name == "int4-kv16":  # fp16 attention under int8 activations: judged by agreement (and KL)
        assert report["criterion"].startswith("teacher_forced_top1_agreement") and report["mean_kl"] < 1e-3
    elif name == "int4-float-kv8":  # exact linears, and an int8 cache the reference rounds as the kernel does; which
        # side of a rounding tie a cached value lands on depends on the CPU's float arithmetic, so: agreement
        assert report["reference"] == "fake-quant int4, int8 KV cache" and report["criterion"].startswith(
            "teacher_forced_top1_agreement")
        assert report["mean_kl"] < 1e-3 and manifest["kv_cache"]["dtype"] == "int8"
    elif name in ("fp32", "int8-float", "int4-float"):  # the reference's own weights and arithmetic: exact
        assert report["max_abs_logit_diff"] <= 1e-3
        assert manifest["quant"].get("activations", "float") == "float"
    else:  # int8 activations, which the reference rounds as the kernels do (and the default int8 cache, or fp32's)
        assert manifest["quant"]["activations"] == "int8-dynamic-per-block" and report["mean_kl"] < 1e-3
        kv = manifest["kv_cache"]["dtype"]
        assert kv == ("float32" if name == "int4-kv32" else "int8")
        assert report["reference"].endswith("(int8-dynamic-per-block activations)"
                                             + (", int8 KV cache" if kv == "int8" else ""))
    assert (report["target"], report["quant"]) == ("onnx", name.split("-")[0] if "awq" not in name else name)


def test_defaults_are_the_fast_configuration(bundles):
    """int4: int8 activations and one int4 table the embedding gathers from and the LM head reads; int8: 8-bit
    MatMulNBits (not a DequantizeLinear of every weight on every step); both an int8 KV cache (the kv16 variant: a
    float16 one); the exact graphs (fp32, --activations float) keep a float32 cache."""
    for name, table_bits in (("int4", 4), ("int8", 8)):
        manifest = read_manifest(bundles[name])
        assert manifest["quant"]["embedding"] == f"int{table_bits}"
        graph = onnx.load(str(bundles[name] / "model.onnx"), load_external_data=False).graph
        ops = [n.op_type for n in graph.node]
        assert "DequantizeLinear" not in ops and "GatherBlockQuantized" in ops
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert nbits and all(a.i == 4 for n in nbits for a in n.attribute if a.name == "accuracy_level")
        gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
        table = "embed_tokens.weight.qweight"
        assert any(n.input[1] == table for n in nbits)  # the head reads the table the gather reads
        assert any(n.op_type == "Reshape" and n.input[0] == table and n.output[0] == gather.input[0]
                   for n in graph.node)
        assert manifest["kv_cache"]["dtype"] == "int8"
        # each layer's attention: an If whose one-token branch is the int8 kernel in PER_TENSOR mode, and whose
        # prompt branch is the float kernel (no rotation: RoPE runs before it, to round the keys it attends to)
        ifs = [n for n in graph.node if n.op_type == "If"]
        assert len(ifs) == manifest["architecture"]["num_hidden_layers"]
        for node in ifs:
            branches = {a.name: a.g for a in node.attribute}
            [decode] = [n for n in branches["else_branch"].node if n.op_type == "GroupQueryAttention"]
            [prompt] = [n for n in branches["then_branch"].node if n.op_type == "GroupQueryAttention"]
            decode_attrs = {a.name: a.s or a.i for a in decode.attribute}
            prompt_attrs = {a.name: a.s or a.i for a in prompt.attribute}
            assert (decode_attrs["k_quant_type"], decode_attrs["v_quant_type"]) == (b"PER_TENSOR", b"PER_TENSOR")
            assert decode_attrs["kv_cache_bit_width"] == 8 and "kv_cache_bit_width" not in prompt_attrs
            assert prompt_attrs["do_rotary"] == 0
    assert read_manifest(bundles["int4-kv16"])["kv_cache"]["dtype"] == "float16"
    for name in ("fp32", "int4-float", "int8-float"):
        assert read_manifest(bundles[name])["kv_cache"]["dtype"] == "float32"


def test_fp16_bundle_is_half_size_with_an_fp16_cache(bundles):
    fp16, fp32 = read_manifest(bundles["fp16"]), read_manifest(bundles["fp32"])
    assert fp16["kv_cache"]["dtype"] == "float16"
    assert fp16["kv_cache"]["bytes_at_max_context"] * 2 == fp32["kv_cache"]["bytes_at_max_context"]
    weights = lambda m: m["files"]["model.onnx.data"]["bytes"]  # noqa: E731
    assert 0.45 < weights(fp16) / weights(fp32) < 0.55


def test_bundle_files_and_manifest(bundles):
    manifest = read_manifest(bundles["int4"])
    assert check_files(bundles["int4"], manifest) == []
    assert manifest["source_model"]["id"] == "tiny"
    assert manifest["quant"] == {**manifest["quant"], "name": "int4", "method": "rtn", "bits": 4, "group_size": 64}
    assert manifest["max_seq_len"] == 512  # tiny's own maximum, below the 1024 default
    names = {i["name"] for i in manifest["entry_points"][0]["inputs"]}
    assert {"input_ids", "position_ids", "past_key_0", "past_value_3"} <= names


def test_int4_weights_are_exactly_our_quantizers(bundles):
    """The MatMulNBits blobs hold the codes and scales exporter/quant chose: read back and compare."""
    model = onnx.load(str(bundles["int4"] / "model.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    module, _ = from_pretrained("tiny", max_seq_len=16)
    ours = quantize_module(module, QuantRecipe.for_quant("int4", 64))
    name = "layers.2.mlp.down_proj.weight"
    blob = inits[f"{name}.qweight"]
    import torch

    codes = unpack_int4(torch.from_numpy(blob.reshape(blob.shape[0], -1).copy()), signed=True)
    assert torch.equal(codes, ours[name].q)
    assert np.array_equal(inits[f"{name}.scales"], ours[name].scales.numpy())  # [out, groups]
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulNBits" in ops
    # the tied head's table is gathered with its scales as stored (no Reshape for ORT to fold into a copy at load)
    (gather,) = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert gather.input[2] == "embed_tokens.weight.scales"


@pytest.mark.slow
def test_real_shape_int4_bundle_size_and_parity(tmp_path, capsys, monkeypatch):
    """Qwen3-0.6B's shape with 2 layers: int4 bundle within 15% of params x 4 bits + scales (+ int8 table)."""
    monkeypatch.setenv("QWEN_EDGE_NPU_PROVIDER", "cpu")  # its npu bundle on the CPU provider; HTP is test_qnn.py's
    model_dir = tmp_path / "m"
    assert run_cli(capsys, "make-model", "--shape", "0.6b", "--layers", "2", "--out", str(model_dir))[0] == 0
    bundle = tmp_path / "b"
    # float activations: with random weights every position is a near-tie, where int8 activation rounding flips
    # argmaxes of the reference against itself (README: ExecuTorch's 8-bit activations show the same); the default
    # int8-activation graph is checked on tiny, whose predictions are not flat
    code, out, err = run_cli(capsys, "--model", str(model_dir), "--target", "onnx", "--quant", "int4",
                             "--activations", "float", "--max-seq-len", "256", "--out", str(bundle))
    assert code == 0, err
    c = SHAPES["0.6b"]
    h, i, heads, kv, hd, v = (c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
                              c["num_key_value_heads"], c["head_dim"], c["vocab_size"])
    linear = 2 * (h * heads * hd * 2 + 2 * h * kv * hd + 3 * h * i)
    expected = (linear + v * h) / 2 + (linear + v * h) / 128 * 4  # int4 linears and table, fp32 scales per 128
    size = sum(p.stat().st_size for p in bundle.iterdir() if p.name.startswith("model.onnx"))
    assert abs(size - expected) / expected < 0.15, (size, expected)
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundle), "--max-new-tokens", "8", "--thinking-budget", "4")
    assert code == 0, out
    assert read_manifest(bundle)["source_model"]["id"] == str(model_dir.resolve())  # found from any directory
    npu = tmp_path / "npu"
    assert run_cli(capsys, "--model", str(model_dir), "--target", "onnx", "--quant", "int4", "--profile", "npu",
                   "--max-seq-len", "128", "--out", str(npu))[0] == 0
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(npu), "--max-new-tokens", "8", "--thinking-budget", "0")
    assert code == 0, out


@pytest.mark.parametrize("asymmetric", [False, True])
def test_int4_embedding_table_shared_with_the_head(tmp_path, capsys, bundles, asymmetric):
    """--embedding int4: the LM head's MatMulNBits and the embedding's gather read one packed table."""
    bundle = tmp_path / "e"
    argv = ["--model", "tiny", "--target", "onnx", "--quant", "int4", "--embedding", "int4", "--out", str(bundle)]
    assert run_cli(capsys, *argv, *(["--asymmetric"] if asymmetric else []))[0] == 0
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    tables = [t for t in model.graph.initializer if t.name.startswith("embed_tokens.weight.qweight")]
    vocab = json.loads((resolve_model_dir("tiny") / "config.json").read_text())["vocab_size"]
    assert len(tables) == 1 and list(tables[0].dims) == [vocab, 3, 32]  # vocab, groups of 64, 64 / 2 bytes
    heads = [n for n in model.graph.node if n.op_type == "MatMulNBits" and n.input[1] == tables[0].name]
    assert len(heads) == 1
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundle))
    assert code == 0, out


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_npu_profile_static_graphs_and_parity_on_cpu(quant, tmp_path, capsys, bundles, monkeypatch):
    """The npu profile's graphs (exporter/targets/onnx_npu.py) on ONNX Runtime's CPU provider, as a machine without
    onnxruntime-qnn runs them; tests/test_qnn.py runs them on Qualcomm's HTP."""
    monkeypatch.setenv("QWEN_EDGE_NPU_PROVIDER", "cpu")
    bundle = tmp_path / quant
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--profile", "npu", "--npu-chunk", "16",
                           "--quant", quant, "--group-size", "64", "--max-seq-len", "128", "--out", str(bundle))
    assert code == 0, err
    manifest = read_manifest(bundle)
    assert manifest["profile"] == "npu" and [e["name"] for e in manifest["entry_points"]] == ["prefill", "decode",
                                                                                              "embed"]
    assert manifest["npu"]["activations"] == "float16" and manifest["kv_cache"]["dtype"] == "float16"
    assert manifest["quant"][f"int{quant[-1]}_scale_dtype"] == "float16" and "qnn" not in manifest
    for entry in manifest["entry_points"][:2]:
        onnx.checker.check_model(str(bundle / entry["file"]), full_check=True)
        model = onnx.load(str(bundle / entry["file"]), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        assert "MatMulNBits" in ops and "RMSNormalization" in ops and not ops & {"Gather", "Cast", "DequantizeLinear"}
        dims = [d for t in list(model.graph.input) + list(model.graph.output) for d in t.type.tensor_type.shape.dim]
        assert all(d.HasField("dim_value") for d in dims), "static shapes only"
    # the graphs read one weights file, no bigger than the CPU bundle's, and hold no weights themselves
    data = (bundle / "model.onnx.data").stat().st_size
    assert data < 1.1 * (bundles[quant] / "model.onnx.data").stat().st_size
    assert all((bundle / f).stat().st_size < 0.1 * data for f in ("prefill.onnx", "decode.onnx", "embed.onnx"))
    report_path = tmp_path / "parity.json"
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(bundle), "--max-new-tokens", "16", "--thinking-budget",
                           "8", "--json", str(report_path))
    assert code == 0, out
    report = json.loads(report_path.read_text())
    assert report["execution"] == {"execution_provider": "CPUExecutionProvider"}
    assert report["reference"] == f"fake-quant {quant} (fp16 activations and KV cache, as the NPU graphs)"
    assert report["greedy_token_match"] == 1.0 and report["versus_fp32"]["teacher_forced_top1_agreement"] > 0.9


@pytest.mark.parametrize("argv, message", [
    (["--target", "onnx", "--max-seq-len", "4096"], "max_position_embeddings (512)"),
    (["--target", "onnx", "--profile", "npu", "--embedding", "int4"], "use --embedding int8"),
    (["--target", "onnx", "--profile", "npu", "--quant", "fp32"], "the NPU computes in fp16"),
    (["--target", "onnx", "--profile", "npu", "--asymmetric"], "symmetric weights only"),
    (["--target", "onnx", "--qnn-soc", "8gen3"], "add --profile npu"),
    (["--target", "executorch", "--qnn-soc", "8gen3"], "use it with --target onnx --profile npu"),
    (["--target", "onnx", "--profile", "npu", "--qnn-soc", "8gen4"], "choose from 8gen2, 8gen3, 8elite or all"),
])
def test_export_refusals(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "--model", "tiny", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_export_is_deterministic(bundles, tmp_path):
    """The same checkpoint, flags and library versions give byte-identical files."""
    from exporter.cli import main
    from tests.conftest import file_hashes

    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int4", "--group-size", "64", "--calib",
                 "arithmetic", "--samples", "16", "--seq-len", "128", "--out", str(tmp_path / "again")]) == 0
    assert file_hashes(tmp_path / "again") == file_hashes(bundles["int4"])


@pytest.mark.parametrize("bits", [4, 8])
def test_one_matmulnbits_at_level_4_is_modelled_exactly(bits):
    import onnxruntime as ort
    import torch
    from onnx import helper, numpy_helper, TensorProto

    from runtimes.quant.packing import pack_int4
    from runtimes.quant.rtn import dequantize, fake_quantize_activations_blockwise, quantize

    from exporter.targets.onnx_graph import nbits_layout
    from runtimes.quant.packing import int8_block

    torch.manual_seed(0)
    K, N = 384, 64
    qt = quantize(torch.randn(N, K) * 0.02, bits, 32 if bits == 4 else None, True)
    blob, scales, g = nbits_layout(qt)
    assert g == (32 if bits == 4 else int8_block(K) == 128 and 128)
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=K, N=N, bits=bits,
                            block_size=g, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
                              [numpy_helper.from_array(blob, "w"), numpy_helper.from_array(scales, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, K) * 2
    got = session.run(None, {"x": x.numpy()})[0]
    modelled = (fake_quantize_activations_blockwise(x, g) @ dequantize(qt).T).numpy()
    unmodelled = (x @ dequantize(qt).T).numpy()
    assert np.abs(got - modelled).max() < 1e-4 < np.abs(got - unmodelled).max()


@pytest.mark.parametrize("argv, message", [
    (["--target", "onnx", "--quant", "fp16", "--activations", "int8"], "applies to the quantized linears"),
    (["--target", "onnx", "--profile", "npu", "--activations", "int8"], "applies to the quantized linears"),
    (["--target", "executorch", "--kv-cache", "float16"], "executorch does not store its cache so"),
    (["--target", "coreml", "--kv-cache", "int8"], "coreml does not store its cache so"),
    (["--target", "onnx", "--profile", "npu", "--kv-cache", "int8"], "applies to the onnx cpu profile"),
    (["--target", "onnx", "--quant", "fp16", "--kv-cache", "float16"], "keeps the KV cache in float16 already"),
    (["--target", "coreml", "--activations", "int8"], "Core ML keeps activations in fp16"),
    (["--target", "executorch", "--quant", "int4", "--activations", "float"], "8-bit dynamic activations only"),
])
def test_activation_option_refusals(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "--model", "tiny", *argv, "--out", str(tmp_path / "x"))
    assert code == 2 and message in err
    assert not (tmp_path / "x").exists()


KV_TIE = 1e-3  # of a code step: far above float32 reassociation, far below any real rounding difference


def reference_unrounded(bundle, ids: list[int], stored: list[np.ndarray]) -> list[np.ndarray]:
    """The parity reference's keys and values over `ids`, divided by the cache's scales and not yet rounded
    ([1, kv_heads, T, head_dim] per layer, key then value), each layer computed on the codes ONNX Runtime stored
    (`stored`, the same layout) rather than on the reference's own: which side of a rounding tie a value lands on
    depends on the CPU's float arithmetic (AVX2, AVX-512, ARM sum in different orders), and one flipped code changes
    every later layer's inputs a little, so the reference follows ONNX Runtime's rounded history."""
    import torch

    from runtimes.reference import bundle_reference
    from runtimes.quant.kv import SCALES_FILE

    reference, _ = bundle_reference(read_manifest(bundle), None, bundle)
    scales = torch.from_numpy(np.load(bundle / SCALES_FILE))
    unrounded = {}

    def on_ort_codes(layer: int, cache):
        def update(input_pos, k, v):
            for j, x in enumerate((k, v)):
                unrounded[2 * layer + j] = (x.float() / scales[layer, j][None, :, None, :]).numpy()
                codes = torch.from_numpy(stored[2 * layer + j][:, :, input_pos.numpy()].astype(np.float32))
                cache_tensor = (cache.k_cache, cache.v_cache)[j]
                cache_tensor[:, :, input_pos] = (codes * scales[layer, j][None, :, None, :]).to(cache_tensor.dtype)
            return cache.k_cache, cache.v_cache
        return update

    for i, layer in enumerate(reference.module.layers):
        cache = layer.self_attn.attend.kv_cache
        cache.update = on_ort_codes(i, cache)
    reference.prefill(ids)
    return [unrounded[i] for i in range(len(stored))]


def assert_reference_rounding(stored: list[np.ndarray], unrounded: list[np.ndarray]) -> None:
    """Every code equals the reference's rounding of its unrounded value (ties to even, saturating) unless that
    value lies within KV_TIE of a rounding boundary, and there it may be one step away; such flips are rare."""
    from runtimes.quant.kv import QMAX

    flips = 0
    for index, (codes, x) in enumerate(zip(stored, unrounded)):
        expected = np.clip(np.round(x), -QMAX - 1, QMAX)
        got = codes.astype(np.float32)
        at_tie = np.abs(np.abs(x - np.floor(x)) - 0.5) <= KV_TIE
        assert np.all((got == expected) | (at_tie & (np.abs(got - expected) == 1))), index
        flips += int((got != expected).sum())
    assert flips <= 0.001 * sum(codes.size for codes in stored)  # ties are rare, not the rule


def test_int8_kv_cache_holds_what_the_reference_rounds(bundles, tiny_tokenizer):
    """The int8 cache ONNX Runtime writes during a prefill is, code for code, the reference's rounding of its own
    keys and values with the bundle's scales (a quarter of the fp32 cache's bytes). What is left between the two,
    the reference following ONNX Runtime's codes layer by layer (reference_unrounded), is float32 reassociation in
    one layer of the float-activation graph (relative error ~1e-6, under KV_TIE of a code step for codes up to 128)."""
    from runtimes.bundle import load_backend
    from runtimes.quant.kv import SCALES_FILE

    bundle = bundles["int4-float-kv8"]
    manifest = read_manifest(bundle)
    assert SCALES_FILE in manifest["files"] and manifest["quant"].get("activations", "float") == "float"
    assert manifest["kv_cache"]["bytes_at_max_context"] * 4 == read_manifest(bundles["int4-kv32"])["kv_cache"][
        "bytes_at_max_context"]
    ids = tiny_tokenizer.encode("<|im_start|>user\nWhat is 4821 - 9377?<|im_end|>\n<|im_start|>assistant\n")
    backend = load_backend(bundle)
    backend.prefill(ids)
    stored = [backend.past[i].numpy()[:, :, :len(ids)] for i in range(len(backend.past))]
    assert all(codes.dtype == np.int8 for codes in stored)
    assert_reference_rounding(stored, reference_unrounded(bundle, ids, stored))


def test_int8_cache_prompt_path_stores_what_decode_stores(bundles, tiny_tokenizer):
    """An int8-cache graph runs a prompt on its float path (codes rounded before it attends, written by ScatterND)
    and a decode step on the int8 kernel. Two prompts (the second at position P > 0, a chat's next turn) leave the codes
    that token-by-token decoding leaves, and the same next-token logits by parity's criteria.

    Both runs are checked against the reference on their own codes (reference_unrounded): each stores the
    reference's rounding except at ties, so the two differ only where a value sat within KV_TIE of a tie (which one
    lands where depends on the CPU's arithmetic); the first layer that differs at all differs only there."""
    from runtimes.bundle import load_backend
    from runtimes.eval.parity import logit_metrics
    from runtimes.fixture import NEAR_TIE_MARGIN

    bundle = bundles["int4-float-kv8"]
    first = tiny_tokenizer.encode("<|im_start|>system\nYou are a careful assistant. Answer with the number only."
                                  "<|im_end|>\n<|im_start|>user\nWhat is 4821 - 9377?<|im_end|>\n"
                                  "<|im_start|>assistant\n")
    second = tiny_tokenizer.encode("-4556<|im_end|>\n<|im_start|>user\nAnd what is 12 * 12, and then 144 divided by "
                                   "3? Answer with both numbers.<|im_end|>\n<|im_start|>assistant\n")
    assert min(len(first), len(second)) >= FLOAT_ATTENTION_MIN_TOKENS  # both prompts take the float path
    ids = first + second
    backend = load_backend(bundle)
    backend.prefill(first)
    prompt_logits = backend.prefill(second)
    prompt = [backend.past[i].numpy()[:, :, :len(ids)].copy() for i in range(len(backend.past))]
    backend.reset()
    for token in ids:
        decode_logits = backend.decode(token)
    decode = [backend.past[i].numpy()[:, :, :len(ids)].copy() for i in range(len(backend.past))]
    prompt_unrounded = reference_unrounded(bundle, ids, prompt)
    assert_reference_rounding(prompt, prompt_unrounded)
    assert_reference_rounding(decode, reference_unrounded(bundle, ids, decode))
    differing = [i for i in range(len(prompt)) if not np.array_equal(prompt[i], decode[i])]
    if differing:
        i = min(differing) // 2 * 2  # the first layer with a difference: its history above agrees
        for j in (i, i + 1):
            x, diff = prompt_unrounded[j], prompt[j].astype(np.int16) - decode[j]
            at_tie = np.abs(np.abs(x - np.floor(x)) - 0.5) <= KV_TIE
            assert np.all((diff == 0) | (at_tie & (np.abs(diff) == 1))), j
    metrics = logit_metrics(prompt_logits[None], decode_logits[None])
    assert all(d["reference_margin"] <= NEAR_TIE_MARGIN for d in metrics["disagreements"])
    assert metrics["mean_kl"] < 1e-3


def test_int8_cache_prompts_into_a_growing_past(bundles):
    """A client that passes a growing past (C = P, no shared buffer) gets the prompt's codes concatenated: two
    prompts on the float path, a short one and a decode step (the int8 kernel) leave the codes and logits of the
    onnxruntime backend's in-place buffers."""
    import onnxruntime as ort

    from runtimes.bundle import load_backend
    from runtimes.fixture import EXACT_TOLERANCE

    bundle = bundles["int4"]
    backend = load_backend(bundle, threads=1)
    calls = [list(range(3, 43)), list(range(50, 50 + FLOAT_ATTENTION_MIN_TOKENS)), [7, 8, 9], [5]]
    in_place = [backend.prefill(tokens) for tokens in calls]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the backend: the same kernels on the same partition of the work
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past = {f"past_{kind}_{i}": np.zeros((1, backend.kv_heads, 0, backend.head_dim), np.int8)
            for i in range(backend.layers) for kind in ("key", "value")}
    position = 0
    for tokens, expected in zip(calls, in_place):
        outputs = session.run(None, {"input_ids": np.array([tokens]), **past,
                                     "position_ids": np.arange(position, position + len(tokens))[None]})
        position += len(tokens)
        past = {name.replace("present", "past"): value for name, value in zip(names[1:], outputs[1:])}
        assert np.abs(outputs[0][0, -1] - expected).max() <= EXACT_TOLERANCE
    for i, buffer in enumerate(backend.past):
        grown = past[f"past_{('key', 'value')[i % 2]}_{i // 2}"]
        assert grown.shape[2] == position and np.array_equal(grown, buffer.numpy()[:, :, :position])


def test_kv_fake_quant_is_the_kernels_rounding():
    """runtimes/quant/kv.fake_quant against ONNX Runtime's GroupQueryAttention in its int8 PER_TENSOR mode at scale 1,
    fed as the exporter feeds it (exporter/targets/onnx_cpu.py's attention): keys and values divided by their
    per-channel scales, the query times the keys' scales, the output times the values'. The codes it stores (ties
    round to even, beyond the scale's range saturate) and the attention it computes (over the rounded cache,
    this call's own keys and values included) are per-channel fake quantization's."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from runtimes.quant.kv import fake_quant

    heads, kv_heads, hd, positions = 4, 2, 16, 8
    group = heads // kv_heads
    rng = np.random.default_rng(0)
    k_scale = (rng.random((1, kv_heads, 1, hd)) * 0.05 + 0.01).astype(np.float32)
    v_scale = (rng.random((1, kv_heads, 1, hd)) * 0.05 + 0.01).astype(np.float32)
    k_scale[0, 0, 0, 0] = 2.0 ** -5  # a power of two: the tie below is exactly one, after the division too
    io = lambda name, dtype, shape: helper.make_tensor_value_info(name, dtype, shape)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total", "", "", "",
                                                  "", "", "unit", "unit"], ["out", "present_k", "present_v"],
                          domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, kv_cache_bit_width=8,
                          k_quant_type="PER_TENSOR", v_quant_type="PER_TENSOR")], "gqa",
        [io("q", TensorProto.FLOAT, [1, "S", heads * hd]), io("k", TensorProto.FLOAT, [1, "S", kv_heads * hd]),
         io("v", TensorProto.FLOAT, [1, "S", kv_heads * hd]),
         io("past_k", TensorProto.INT8, [1, kv_heads, positions, hd]),
         io("past_v", TensorProto.INT8, [1, kv_heads, positions, hd]), io("seqlens_k", TensorProto.INT32, [1]),
         io("total", TensorProto.INT32, [])],
        [io("out", TensorProto.FLOAT, None), io("present_k", TensorProto.INT8, None),
         io("present_v", TensorProto.INT8, None)],
        [helper.make_tensor("unit", TensorProto.FLOAT, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    seq = 3
    q = rng.standard_normal((1, seq, heads * hd)).astype(np.float32)
    k = (rng.standard_normal((1, seq, kv_heads * hd)) * 2).astype(np.float32)
    v = rng.standard_normal((1, seq, kv_heads * hd)).astype(np.float32)
    k[0, 0, 0] = k_scale[0, 0, 0, 0] * 2.5  # a tie: to even, 2 (half away from zero would be 3)
    k[0, 1, 1] = -k_scale[0, 0, 0, 1] * 500  # beyond the range: -128
    per_kv = lambda s: s.reshape(-1)  # noqa: E731  [kv_heads * hd], the kernel's flat layout
    per_query = lambda s: np.repeat(s.reshape(kv_heads, hd), group, axis=0).reshape(-1)  # noqa: E731
    zeros = np.zeros((1, kv_heads, positions, hd), np.int8)
    out, present_k, present_v = session.run(None, {
        "q": q * per_query(k_scale), "k": k / per_kv(k_scale), "v": v / per_kv(v_scale), "past_k": zeros,
        "past_v": zeros, "seqlens_k": np.array([seq - 1], np.int32), "total": np.array(seq, np.int32)})
    out = out * per_query(v_scale)
    assert present_k[0, 0, 0, 0] == 2 and present_k[0, 0, 1, 1] == -128
    as_cache = lambda x: torch.from_numpy(x).view(1, seq, kv_heads, hd).transpose(1, 2)  # noqa: E731
    ours_k = fake_quant(as_cache(k), torch.from_numpy(k_scale[0]))
    ours_v = fake_quant(as_cache(v), torch.from_numpy(v_scale[0]))
    assert np.array_equal(present_k[:, :, :seq].astype(np.float32) * k_scale, ours_k.numpy())
    assert np.array_equal(present_v[:, :, :seq].astype(np.float32) * v_scale, ours_v.numpy())
    query = torch.from_numpy(q).view(1, seq, heads, hd).transpose(1, 2)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, ours_k.repeat_interleave(group, dim=1), ours_v.repeat_interleave(group, dim=1),
        is_causal=True).transpose(1, 2).reshape(1, seq, -1)
    assert np.abs(out - expected.numpy()).max() < 1e-5


def test_kv_scales_of_another_shape_are_refused_clearly(bundles, tmp_path, capsys):
    """A bundle whose kv_scales.npy (consistently hashed) does not fit the model: one error line, no traceback."""
    import shutil

    from runtimes.files import sha256_file
    from runtimes.quant.kv import SCALES_FILE
    from tests.test_bundle import write_manifest_json

    bundle = tmp_path / "b"
    shutil.copytree(bundles["int4"], bundle)
    np.save(bundle / SCALES_FILE, np.ones((3, 2, 2, 8), np.float32))
    manifest = json.loads((bundle / "manifest.json").read_text())
    scales = bundle / SCALES_FILE
    manifest["files"][SCALES_FILE] = {"sha256": sha256_file(scales), "bytes": scales.stat().st_size}
    write_manifest_json(bundle, manifest)
    code, _, err = run_cli(capsys, "parity", "--bundle", str(bundle))
    assert code == 2 and "holds scales of shape (3, 2, 2, 8)" in err and "Traceback" not in err
