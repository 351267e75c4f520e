"""The npu profile on Qualcomm's Hexagon NPU (HTP) through ONNX Runtime's QNN execution provider (onnxruntime-qnn):
every node of both graphs placed on HTP for Snapdragon 8 Gen 2 / 8 Gen 3 / 8 Elite with CPU fallback disabled, the
same greedy tokens as the fp16 reference on Qualcomm's HTP simulator, precompiled context binaries that load back in a
fresh process with the same tokens, an unsupported node refused in one error that names it, and reports that say what
ran a bundle (and that simulated timings are not phone speed).

On x86 the HTP backend compiles for the phone's NPU and then simulates it, slowly (about 0.1-0.5 s a call for tiny):
the bundles here are small (64 positions, prefill chunks of 32) and the chats short.
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn (ONNX Runtime's QNN execution provider) is not "
                    "installed: pip install 'qwen-edge[qnn]' (wheels for Linux x86_64 and Windows, Python 3.11)")

from exporter.cli import main  # noqa: E402
from runtimes.backends.qnn import SOCS, create_session, placement, versions  # noqa: E402
from runtimes.bundle import load_backend, read_manifest  # noqa: E402
from runtimes.errors import UserError  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402

QUANTS = ("int8", "int4")


@pytest.fixture(autouse=True)
def on_htp(monkeypatch):
    """Whatever the environment says, these tests run the npu bundles on the qnn backend."""
    monkeypatch.delenv("QWEN_EDGE_NPU_PROVIDER", raising=False)
    monkeypatch.delenv("QWEN_EDGE_QNN_SOC", raising=False)


@pytest.fixture(scope="module")
def npu_bundles(tmp_path_factory):
    """tiny's npu bundles; the int4 one also precompiled for every SoC (--qnn-soc all)."""
    base = tmp_path_factory.mktemp("qnn")
    for quant in QUANTS:
        argv = ["--model", "tiny", "--target", "onnx", "--profile", "npu", "--quant", quant, "--group-size", "64",
                "--max-seq-len", "64", "--npu-chunk", "32", "--out", str(base / quant)]
        assert main(argv + (["--qnn-soc", "all"] if quant == "int4" else [])) == 0
    return {quant: base / quant for quant in QUANTS}


@pytest.mark.slow
@pytest.mark.parametrize("quant", QUANTS)
def test_every_node_on_htp_for_each_soc(npu_bundles, quant):
    """Each HTP graph for each SoC: QNN's validator passes every node of the graph, refuses none, and ONNX Runtime
    places all of them on the QNN EP (with CPU fallback disabled the session would fail otherwise)."""
    for graph in ("prefill", "decode"):
        for soc in SOCS:
            placed = placement(npu_bundles[quant] / f"{graph}.onnx", soc)
            assert placed["all_on_qnn"] and placed["nodes_refused"] == 0, (graph, soc, placed)
            assert placed["nodes_on_htp"] == placed["nodes"] > 100, (graph, soc, placed)


@pytest.mark.slow
@pytest.mark.parametrize("quant", QUANTS)
def test_parity_on_simulated_htp(npu_bundles, quant, capsys, tmp_path):
    """parity --bundle runs an npu bundle on the qnn backend when onnxruntime-qnn is installed: the same greedy tokens
    as the reference that computes in fp16 as the graphs do, teacher-forced top-1 >= 99%, close to the fp32 model; the
    report says what ran it (int4: the bundle's first precompiled SoC, 8gen2; int8: compiled for the default, 8gen3)."""
    prompts, report_path = tmp_path / "prompts.txt", tmp_path / "parity.json"
    prompts.write_text("What is 47 + 385?\n")  # 23 tokens: one prefill chunk, then decode steps
    code, out, _ = run_cli(capsys, "parity", "--bundle", str(npu_bundles[quant]), "--prompts", str(prompts),
                           "--max-new-tokens", "6", "--thinking-budget", "0", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert code == 0, out
    assert report["reference"] == f"fake-quant {quant} (fp16 activations and KV cache, as the NPU graphs)"
    assert report["greedy_token_match"] == 1.0 and report["teacher_forced_top1_agreement"] >= 0.99
    assert report["versus_fp32"]["teacher_forced_top1_agreement"] >= 0.9 and report["versus_fp32"]["mean_kl"] < 0.2
    soc = "8gen2" if quant == "int4" else "8gen3"
    assert report["execution"] == {"execution_provider": "QNNExecutionProvider", "soc": soc,
                                   "soc_name": SOCS[soc].title, "soc_model": SOCS[soc].soc_model,
                                   "htp_arch": SOCS[soc].htp_arch, "simulated": True,
                                   "context_binary": quant == "int4", "cpu_fallback": "disabled", **versions()}
    assert f"on QNN's HTP for {soc} (simulated on this host)" in out
    print(json.dumps({quant: {k: report[k] for k in ("teacher_forced_top1_agreement", "max_abs_logit_diff")},
                      "versus_fp32": report["versus_fp32"]}))


def test_context_binaries_recorded(npu_bundles):
    manifest = read_manifest(npu_bundles["int4"])
    contexts = manifest["qnn"]["contexts"]
    assert [c["soc"] for c in contexts] == list(SOCS)
    for context in contexts:
        assert (context["soc_model"], context["htp_arch"]) == SOCS[context["soc"]][2:]
        assert {context["qnn_sdk"], context["onnxruntime_qnn"]} == {versions()["qnn_sdk"], versions()["onnxruntime_qnn"]}
        assert context["ep_sdk_version"].startswith("v" + context["qnn_sdk"])
        assert set(context["entry_points"]) == {"prefill", "decode"} and len(context["binaries"]) == 2
        for name, entry in context["binaries"].items():
            assert manifest["files"][name] == entry  # hashed like every other file
        for name in context["entry_points"].values():
            nodes = onnx.load(str(npu_bundles["int4"] / name), load_external_data=False).graph.node
            assert [n.op_type for n in nodes] == ["EPContext"]  # the whole graph is one precompiled HTP context
    assert "qnn" not in read_manifest(npu_bundles["int8"])
    for bundle in npu_bundles.values():  # the reference fixture, written by the fp16-arithmetic reference
        fixture = read_manifest(bundle)["fixture"]
        assert fixture["file"] in read_manifest(bundle)["files"] and "fp16 activations" in fixture["reference"]


@pytest.mark.slow
def test_context_binary_loads_in_a_fresh_process_with_the_same_tokens(npu_bundles):
    bundle = npu_bundles["int4"]
    prompt = [1, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    script = (
        "import json, sys\nfrom runtimes.bundle import load_backend\n"
        "b = load_backend(sys.argv[1], soc='8elite')\n"
        "t = [int(b.prefill(json.loads(sys.argv[2])).argmax())]\n"
        "for _ in range(2): t.append(int(b.decode(t[-1]).argmax()))\n"
        "print(json.dumps({'tokens': t, **b.describe()}))\n")
    run = subprocess.run([sys.executable, "-c", script, str(bundle), json.dumps(prompt)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["context_binary"] is True and loaded["soc"] == "8elite" and loaded["htp_arch"] == 79
    compiled = load_backend(bundle, soc="8elite", use_context=False)  # compiled here, now
    assert compiled.describe()["context_binary"] is False
    tokens = [int(compiled.prefill(prompt).argmax())]
    for _ in range(2):
        tokens.append(int(compiled.decode(tokens[-1]).argmax()))
    assert loaded["tokens"] == tokens


def test_unsupported_nodes_are_one_error_naming_them(tmp_path):
    """An int8 table gathered and cast to fp16 (what HTP refuses, and why the npu profile looks rows up on the host):
    one UserError naming the nodes, never a silent CPU fallback."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(64, dtype=np.int8).reshape(16, 4), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="gather_int8"),
         helper.make_node("Cast", ["rows"], ["y"], name="cast_to_fp16", to=TensorProto.FLOAT16)], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 3, 4])], [table])
    path = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    with pytest.raises(UserError) as error:
        create_session(path, "8gen3")
    message = str(error.value)
    assert "CPU fallback is disabled" in message and "\n" not in message
    assert "gather_int8 (Gather)" in message and "cast_to_fp16 (Cast)" in message


@pytest.mark.slow
def test_backend_protocol_and_bench_labels(npu_bundles):
    """The qnn backend keeps the backend protocol (chunked prefill with a padded last chunk, decode, reset, the
    context bound); bench records what ran it and labels simulated timings as not phone speed."""
    from runtimes.eval.bench.measure import _row, measure_speed
    from runtimes.eval.bench.report import markdown

    bundle = npu_bundles["int8"]
    backend = load_backend(bundle)
    assert backend.name == "qnn" and backend.htp.simulated and backend.htp.soc == "8gen3" and backend.max_seq_len == 64
    first = backend.prefill(list(range(3, 40)), all_logits=True)  # two chunks, the second padded
    assert first.shape == (37, 382) and backend.position == 37
    assert backend.decode(int(first[-1].argmax())).shape == (382,) and backend.position == 38
    backend.reset()
    again = backend.prefill(list(range(3, 8)), all_logits=True)  # the first chunk's rows, now with more padding
    assert backend.position == 5 and np.abs(again - first[:5]).max() < 1e-2
    with pytest.raises(UserError, match="65 positions exceed the bundle's context of 64"):
        backend.prefill(list(range(60)))
    assert backend.position == 5
    speed = measure_speed(str(bundle), None, [8], 2, 1, "none")
    assert speed["execution"] == backend.describe()
    manifest = read_manifest(bundle)
    row = {**_row(str(bundle), manifest, speed), "energy": {"joules_per_token": 0.0, "source": "none"}}
    label = "QNNExecutionProvider, HTP v75 8gen3, simulated on an x86 host: not phone speed"
    assert row["config"]["execution_provider"] == label and row["execution"]["soc"] == "8gen3"
    table = markdown({"date": "-", "machine": {"system": "Linux", "machine": "x86_64", "cpus": 2}, "created_by": "-",
                      "settings": {"threads": None, "new_tokens": 4, "runs": 1}, "bundles": [row]})
    assert label in table


@pytest.mark.slow
def test_verify_runs_npu_bundles_on_htp_and_loads_every_context(npu_bundles, capsys, tmp_path):
    import shutil

    from runtimes.bundle import manifest_digest_line

    code, out, _ = run_cli(capsys, "verify", "--bundle", str(npu_bundles["int4"]))
    assert code == 0, out
    assert "ran whole on QNN's HTP for Snapdragon 8 Gen 2 (SM8550) (HTP v73), from its precompiled context binary, " \
           "simulated on this x86 host" in out
    # a context that names a file the manifest does not list, and one whose SoC id is not its chip's
    bundle = tmp_path / "b"
    shutil.copytree(npu_bundles["int4"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["qnn"]["contexts"][1]["entry_points"]["decode"] = "qnn-8gen3/missing.onnx"
    manifest["qnn"]["contexts"][2]["soc_model"] = 60
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "manifest.sha256").write_text(manifest_digest_line((bundle / "manifest.json").read_bytes()))
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 1
    assert "the 8gen3 context's decode entry point names 'qnn-8gen3/missing.onnx'" in out
    assert "soc_model 60 / htp_arch 79 are not Snapdragon 8 Elite (SM8750)'s (69 / 79)" in out
