"""bench-peers: what a decoded token reads, export_llm's params, errors, the measuring order and the rounds, and one
real (ours-only) run on tiny."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from exporter.make_model import SHAPES
from tools.bench_peers import _onnx_streamed_bytes, et_params



def test_streamed_bytes_leave_out_only_what_a_step_gathers(tmp_path):
    """A table only gathered from is not streamed; one the LM head also reads is; RoPE caches are not."""
    arrays = {"gathered": np.zeros((100, 8), np.float32), "shared": np.zeros((50, 8), np.uint8),
              "weight": np.zeros((8, 8), np.float32), "cos": np.zeros((64, 4), np.float32)}
    nodes = [helper.make_node("Gather", ["gathered", "ids"], ["a"]),
             helper.make_node("Gather", ["shared", "ids"], ["b"]),
             helper.make_node("MatMul", ["x", "shared"], ["c"]),
             helper.make_node("MatMul", ["x", "weight"], ["d"]),
             helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "s", "t", "cos", "cos"], ["e"],
                              domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [], [], [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph)
    onnx.save_model(model, tmp_path / "model.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    assert _onnx_streamed_bytes(tmp_path / "model.onnx") == 50 * 8 + 8 * 8 * 4


def test_export_llm_params_follow_the_checkpoint():
    """The 0.6B params export_llm was run with here, from Qwen3-0.6B's config.json."""
    assert et_params(SHAPES["0.6b"]) == {
        "dim": 1024, "ffn_dim_multiplier": 1, "hidden_dim": 3072, "n_heads": 16, "head_dim": 128, "n_kv_heads": 8,
        "n_layers": 28, "norm_eps": 1e-06, "rope_theta": 1000000, "use_scaled_rope": False, "vocab_size": 151936,
        "use_hf_rope": True, "attention_qkv_bias": False, "use_qk_norm": True, "qk_norm_before_rope": True}


def run_peers(capsys, *argv):
    from tools.bench_peers import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, message", [
    (["--model", "nowhere"], "no config.json there"),
    (["--model", "tiny", "--only", "ours-onnx,litert"], "unknown artifact(s) litert"),
    (["--model", "tiny", "--only", "ort-genai", "--genai-python", "false"], "cannot import onnxruntime_genai"),
    (["--model", "tiny", "--only", "ours-onnx", "--no-export"], "not in"),
    (["--model", "tiny", "--threads", "one"], "--threads and --prompt-lengths take comma-separated integers"),
])
def test_bench_peers_bad_input_is_one_line(capsys, tmp_path, argv, message):
    code, _, err = run_peers(capsys, "--work", str(tmp_path / "work"), *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_rounds_interleave_ours_with_the_peers_and_take_medians(tmp_path, monkeypatch):
    """Every setting measures all artifacts back to back, round after round; a row is the median of its rounds,
    and its ratio to the faster peer the median of the rounds' own ratios, each round's pair measured together."""
    import tools.bench_peers as bp

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"vocab_size": 100}))
    for name in ("ours-onnx", "ort-genai"):
        (tmp_path / "w" / name).mkdir(parents=True)
    # ours leads 1.2x in two rounds, and is 0.83x in the first: the rows' medians (50 against 60) would say 0.83x
    speeds = {("ours-onnx", 0): 50.0, ("ort-genai", 0): 60.0, ("ours-onnx", 1): 36.0, ("ort-genai", 1): 30.0,
              ("ours-onnx", 2): 84.0, ("ort-genai", 2): 70.0}
    calls = []

    def measured(python, kind, path, threads, prompt_len, new_tokens, runs, vocab):
        name = Path(path).name
        tok_s = speeds[name, sum(1 for c in calls if c == name)]
        calls.append(name)
        spread = {"median": tok_s, "min": tok_s - 1, "max": tok_s + 1}
        return {"ttft_ms": spread, "prefill_tokens_per_s": spread, "decode_tokens_per_s": spread,
                "decode_ms_p50": 1000 / tok_s, "decode_ms_p95": 1000 / tok_s, "peak_rss_bytes": 1}

    monkeypatch.setattr(bp, "check_genai", lambda python: None)
    monkeypatch.setattr(bp, "measure_bandwidth", lambda threads, work: {"2": 10.0})
    monkeypatch.setattr(bp, "streamed_bytes", lambda *args: 1)
    monkeypatch.setattr(bp, "artifact_bytes", lambda *args: 1)
    monkeypatch.setattr(bp, "_measure_in_child", measured)
    result = bp.compare(str(tmp_path / "m"), tmp_path / "w", threads=(2,), runs=1, rounds=3, export=False,
                        only=("ours-onnx", "ort-genai"), progress=False)
    assert calls == ["ours-onnx", "ort-genai"] * 3
    ours, genai = result["bundles"]
    assert ours["latency"]["decode_tokens_per_s_rounds"] == [50.0, 36.0, 84.0]
    assert ours["latency"]["decode_tokens_per_s"] == 50.0 and genai["latency"]["decode_tokens_per_s"] == 60.0
    assert ours["latency"]["decode_tokens_per_s_spread"] == {"median": 50.0, "min": 35.0, "max": 85.0}
    assert ours["vs_faster_peer"] == pytest.approx(1.2) and genai["vs_faster_peer"] == pytest.approx(1.0)
    assert result["settings"]["rounds"] == 3 and "in each of 3 rounds" in bp.markdown(result)


@pytest.mark.slow
def test_bench_peers_exports_and_measures_ours(capsys, tmp_path, monkeypatch):
    """The peers' own exporters take minutes; ours on tiny show the whole path: export, bandwidth, protocol.
    --work is relative to where the user runs it, though the exports run elsewhere."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_peers(capsys, "--model", "tiny", "--work", "work", "--only",
                           "ours-onnx", "--group-size", "64", "--runs", "1", "--prompt-lengths", "16",
                           "--max-new-tokens", "8", "--threads", "1",
                           "--json", str(tmp_path / "peers.json"))
    assert code == 0
    result = json.loads((tmp_path / "peers.json").read_text())
    (row,) = result["bundles"]
    assert row["name"] == "ours-onnx" and not row["peer"] and row["vs_faster_peer"] is None
    assert row["latency"]["threads"] == 1 and row["latency"]["decode_tokens_per_s"] > 0
    assert row["export"]["seconds"] > 0 and row["export"]["peak_rss_bytes"] > 50e6
    assert "--max-seq-len 24" in row["export"]["command"]  # the longest prompt and its new tokens
    # the tied int4 table is read by the LM head: all of the weights but the RoPE caches are streamed
    bundle = tmp_path / "work" / "ours-onnx"
    manifest = json.loads((bundle / "manifest.json").read_text())
    rope = 2 * manifest["max_seq_len"] * manifest["architecture"]["head_dim"] // 2 * 4
    external = (bundle / "model.onnx.data").stat().st_size - rope
    assert external <= row["bandwidth_limit"]["read_bytes_per_token"] <= external + (bundle / "model.onnx").stat().st_size
    bandwidth = result["bandwidth_gb_s"]["1"]
    assert isinstance(bandwidth, float) and bandwidth > 1
    assert row["bandwidth_limit"]["of_limit"] == pytest.approx(
        row["latency"]["decode_tokens_per_s"] * row["bandwidth_limit"]["read_bytes_per_token"] / (bandwidth * 1e9))
    assert "| ours-onnx | 1 | 16 |" in out


def test_bench_gqa_times_every_cache_mode():
    """tools/bench_gqa.py (the attention microbenchmark docs/onnx.md quotes) runs each mode, decode and prompt."""
    import subprocess
    import sys

    for extra in ([], ["--queries", "16"]):
        out = subprocess.run([sys.executable, "-m", "tools.bench_gqa", "--position", "64", "--layers", "2", "--runs",
                              "2", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", *extra],
                             check=True, capture_output=True, text=True).stdout
        rows = [line.split() for line in out.splitlines()[1:]]
        assert [row[0] for row in rows] == ["float32", "int8-per-channel", "int8-per-tensor"], out
        assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows), out
