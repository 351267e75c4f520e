"""`python -m tools.bench_peers`: our exporter against the toolchains a user would pick instead, in one run.

One Hugging Face checkpoint is exported five ways, each in a child process (wall time, and peak RSS from
wait4, which covers the child's own children):

  ours-onnx               python -m exporter --target onnx --quant int4 --embedding int4 --activations int8
  ours-executorch         python -m exporter --target executorch --quant 8da4w --embedding int4 (its default int8
                          cache on our kernels: runtimes/kernels/)
  ours-executorch-f32     the same with --kv-cache float32 (ExecuTorch's stock cache ops, as its prebuilt Android
                          library runs them)
  ort-genai               onnxruntime-genai's model builder, int4, CPU, block = --group-size
  executorch-export-llm   ExecuTorch's export_llm with its qwen3 XNNPACK 8da4w config (group 128)

Then every artifact is measured at every thread count and prompt length in a fresh process with one
protocol (runtimes/eval/latency.py: fixed prompt ids, greedy new tokens one at a time, a warm-up, then `runs`
runs, medians with [min, max]), all artifacts back to back at each setting. --rounds N repeats that sweep N
times: a row is then the median of its rounds, and its ratio to the faster peer the median of the rounds' own
ratios, so neither a slow minute of the shared host nor one process's luck decides it. The machine's read
bandwidth is measured at the same thread counts (bandwidth.c: an OpenMP loop summing a 2 GiB buffer, best of
8). The memory-bandwidth limit of decode is that bandwidth divided by the bytes a decoded token reads: the
artifact's bytes less the tables a step only gathers a row of (a separate embedding table, RoPE caches); the KV
cache is left out.
The result is bench's JSON (rows with `latency` and `memory` as bench writes them) plus `export` per row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from exporter.commands.common import max_new_tokens_argument, model_argument
from runtimes.bundle import load_backend
from runtimes.errors import UserError
from runtimes.eval.latency import one_run, spread, timed
from runtimes.generate import peak_rss_bytes
from tools.measure_export import run_measured

ARTIFACTS = ("ours-onnx", "ours-executorch", "ours-executorch-f32", "ort-genai", "executorch-export-llm")
PEER_NAMES = ("ort-genai", "executorch-export-llm")
# export_llm's model classes by (hidden size, layers): its shipped params for Qwen3's published sizes
ET_MODEL_CLASSES = {(1024, 28): "qwen3_0_6b", (2048, 28): "qwen3_1_7b", (2560, 36): "qwen3_4b"}
HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # tools/ sits at the repository root


# -- exports ------------------------------------------------------------------------------------------
def run_logged(cmd: Sequence[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run cmd with its output appended to log → wall seconds and the peak RSS of it and its children."""
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        record = run_measured(list(cmd), stdout=out, env=env, cwd=cwd)
    code = record.pop("exit_code")
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise UserError(f"{shlex.join(cmd)} failed (exit {code}); the end of {log}:\n{tail}")
    return record


def _combine(steps: list[dict]) -> dict:
    return {"command": " && ".join(s["command"] for s in steps), "seconds": round(sum(s["seconds"] for s in steps), 1),
            "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps)}


def _ours(model: str, out: Path, target: str, quant: str, group: int, context: int, extra: list[str],
          log: Path) -> dict:
    """Our exporter with its defaults (int8 activations and the int4 table are the defaults now)."""
    return run_logged([sys.executable, "-m", "exporter", "--model", model, "--target", target, "--quant", quant,
                       "--group-size", str(group), "--max-seq-len", str(context), *extra, "--out", str(out),
                       "--overwrite"], log, cwd=REPO)


def _genai(model: str, out: Path, group: int, python: str, work: Path, log: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return run_logged([python, "-m", "onnxruntime_genai.models.builder", "-m", model, "-i", model, "-o", str(out),
                       "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache"),
                       "--extra_options", f"block_size={group}"], log)


def et_params(config: dict) -> dict:
    """export_llm's params.json for a Qwen3 config.json."""
    return {"dim": config["hidden_size"], "ffn_dim_multiplier": 1, "hidden_dim": config["intermediate_size"],
            "n_heads": config["num_attention_heads"], "head_dim": config.get("head_dim"),
            "n_kv_heads": config["num_key_value_heads"], "n_layers": config["num_hidden_layers"],
            "norm_eps": config["rms_norm_eps"], "rope_theta": config["rope_theta"], "use_scaled_rope": False,
            "vocab_size": config["vocab_size"], "use_hf_rope": True, "attention_qkv_bias": False,
            "use_qk_norm": True, "qk_norm_before_rope": True}


def _export_llm(model: str, out: Path, work: Path, context: int, log: Path) -> dict:
    """ExecuTorch's own LLM exporter on its shipped qwen3 XNNPACK 8da4w config (group 128, KV cache, its
    SDPA op). Its loader treats a checkpoint path containing '8da4w' as already quantized: ours never does."""
    config = json.loads((Path(model) / "config.json").read_text())
    model_class = ET_MODEL_CLASSES.get((config["hidden_size"], config["num_hidden_layers"]))
    if model_class is None:
        raise UserError("ExecuTorch's export_llm ships Qwen3 0.6B, 1.7B and 4B model classes only; "
                        f"{model} has hidden size {config['hidden_size']} and {config['num_hidden_layers']} layers")
    params, ckpt = work / "export-llm-params.json", work / "export-llm-checkpoint.pth"
    params.write_text(json.dumps(et_params(config)))
    spec = importlib.util.find_spec("executorch.examples.models.qwen3")  # located, not imported (torchao's noise)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("ExecuTorch's examples (executorch.examples.models.qwen3) are not installed; "
                        "pip install -e '.[executorch]', or leave executorch-export-llm out with --only")
    yaml = Path(list(spec.submodule_search_locations)[0]) / "config" / "qwen3_xnnpack_q8da4w.yaml"
    convert = run_logged([sys.executable, "-m", "executorch.examples.models.qwen3.convert_weights", model,
                          str(ckpt)], log)
    export = run_logged([sys.executable, "-m", "executorch.extension.llm.export.export_llm", "--config", str(yaml),
                         f"+base.model_class={model_class}", f"+base.params={params}", f"+base.checkpoint={ckpt}",
                         f"+export.output_name={out}",
                         # its config sets both lengths already: ++ overrides (+ would fail, "already at ...")
                         f"++export.max_seq_length={context}", f"++export.max_context_length={context}"], log, cwd=work)
    ckpt.unlink(missing_ok=True)
    return _combine([convert, export])


def artifact_path(work: Path, name: str) -> Path:
    return work / (f"{name}.pte" if name == "executorch-export-llm" else name)


def export_all(model: str, work: Path, group: int, context: int, genai_python: str, names: Sequence[str], log: Path,
               progress, onnx_kv_cache: str = "auto") -> dict[str, dict]:
    exports = {}
    for name in names:
        progress(f"exporting {name}")
        out = artifact_path(work, name)
        if name == "ours-onnx":
            exports[name] = _ours(model, out, "onnx", "int4", group, context, ["--kv-cache", onnx_kv_cache], log)
        elif name == "ours-executorch":
            exports[name] = _ours(model, out, "executorch", "8da4w", group, context, [], log)
        elif name == "ours-executorch-f32":
            exports[name] = _ours(model, out, "executorch", "8da4w", group, context, ["--kv-cache", "float32"], log)
        elif name == "ort-genai":
            exports[name] = _genai(model, out, group, genai_python, work, log)
        else:
            exports[name] = _export_llm(model, out, work, context, log)
    return exports


# -- what a decoded token reads ------------------------------------------------------------------------
def _onnx_streamed_bytes(model_file: Path) -> int:
    """Bytes of the initializers a decode step streams: every one except those only gathered from (an
    embedding table no matmul shares, GroupQueryAttention's RoPE caches)."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    gathered_only: dict[str, bool] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            gathered = ((node.op_type in ("Gather", "GatherBlockQuantized") and index == 0)
                        or (node.op_type == "GroupQueryAttention" and index in (7, 8)))
            gathered_only[name] = gathered_only.get(name, True) and gathered
    total = 0
    for init in model.graph.initializer:
        if gathered_only.get(init.name, False):
            continue
        if init.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in init.external_data}["length"])
        else:
            total += onnx.numpy_helper.to_array(init).nbytes
    return total


def streamed_bytes(work: Path, name: str, config: dict, group: int) -> int:
    """Bytes read per decoded token (without the KV cache)."""
    path = artifact_path(work, name)
    if name in ("ours-onnx", "ort-genai"):
        return _onnx_streamed_bytes(path / "model.onnx")
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    if name == "executorch-export-llm":  # its separate 8-bit table with a float scale per row
        table = vocab * hidden + vocab * 4
        size = path.stat().st_size
    else:  # ours: the int4 table embedding_4bit gathers, scales per group (the head is XNNPACK's own copy)
        table = vocab * hidden // 2 + vocab * (hidden // group) * 4
        size = sum(p.stat().st_size for p in path.glob("*.pte"))
    return size - table


def artifact_bytes(work: Path, name: str) -> int:
    path = artifact_path(work, name)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".data", ".pte"))


def measure_bandwidth(threads: Sequence[int], work: Path) -> dict[str, float | str]:
    """GB/s per thread count from bandwidth.c, or why it could not be measured."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return {str(t): "no C compiler (cc) to build runtimes/eval/bench/bandwidth.c" for t in threads}
    binary = work / "bandwidth"
    built = subprocess.run([compiler, "-O2", "-fopenmp", str(HERE / "bandwidth.c"), "-o", str(binary)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return {str(t): f"building bandwidth.c failed: {built.stderr.strip()[:200]}" for t in threads}
    result: dict[str, float | str] = {}
    for t in threads:
        run = subprocess.run([str(binary)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(t)})
        result[str(t)] = float(run.stdout.split()[0]) if run.returncode == 0 else f"bandwidth run failed: {run.stderr[:200]}"
    return result


# -- latency, one protocol for all ------------------------------------------------------------------------
def _summary(results: list[dict], prompt_len: int, new_tokens: int, runs: int) -> dict:
    return {"prompt_tokens": prompt_len, "new_tokens": new_tokens, "runs": runs,
            **{k: spread([r[k] for r in results]) for k in ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s")},
            "decode_ms_p50": statistics.median(r["per_token_ms_p50"] for r in results),
            "decode_ms_p95": statistics.median(r["per_token_ms_p95"] for r in results),
            "peak_rss_bytes": peak_rss_bytes()}


def _genai_run(og, model, prompt: list[int], new_tokens: int) -> dict:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)

    def first_token():
        generator.append_tokens(prompt)
        generator.generate_next_token()

    return timed(first_token, generator.generate_next_token, len(prompt), new_tokens)


def measure_one(kind: str, path: str, threads: int, prompt_len: int, new_tokens: int, runs: int, vocab: int) -> dict:
    """In this (fresh) process: the latency protocol on one artifact (prompt ids as bench draws them)."""
    prompt = np.random.default_rng(prompt_len).integers(0, min(vocab, 1000), prompt_len).tolist()
    if kind == "ort-genai":
        import onnxruntime_genai as og

        copy = Path(tempfile.mkdtemp(prefix="genai-"))  # threads are a genai_config.json setting
        try:
            for item in Path(path).iterdir():
                (copy / item.name).symlink_to(item.resolve())
            config_file = copy / "genai_config.json"
            config = json.loads(config_file.read_text())
            config_file.unlink()
            config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
            config_file.write_text(json.dumps(config))
            model = og.Model(str(copy))
            _genai_run(og, model, prompt, new_tokens)  # warm-up
            results = [_genai_run(og, model, prompt, new_tokens) for _ in range(runs)]
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        return _summary(results, prompt_len, new_tokens, runs)
    if kind == "pte":
        from runtimes.backends.executorch import ExecuTorchBackend, _runtime

        max_seq_len = int(_runtime()._load_for_executorch(path).run_method("get_max_seq_len", ())[0])
        backend = ExecuTorchBackend(Path(path), {"max_seq_len": max_seq_len, "architecture": {"vocab_size": vocab}},
                                    threads=threads)
    else:
        backend = load_backend(path, threads=threads)
    one_run(backend, prompt, new_tokens)  # warm-up
    return _summary([one_run(backend, prompt, new_tokens) for _ in range(runs)], prompt_len, new_tokens, runs)


def _measure_in_child(python: str, kind: str, path: Path, threads: int, prompt_len: int, new_tokens: int,
                      runs: int, vocab: int) -> dict:
    cmd = [python, "-m", "tools.bench_peers", kind, str(path), str(threads), str(prompt_len), str(new_tokens),
           str(runs), str(vocab)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise UserError(f"measuring {path} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the whole comparison ----------------------------------------------------------------------------------
def check_genai(python: str) -> None:
    probe = subprocess.run([python, "-c", "import onnxruntime_genai, onnx_ir"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise UserError(f"{python} cannot import onnxruntime_genai and onnx_ir (ORT-GenAI's model builder needs both): "
                        "pip install -e '.[peers]', or pass --genai-python with an interpreter that has them, or "
                        "leave ort-genai out with --only")


def compare(model: str, work: str | Path, threads: Sequence[int] = (1, 2), group: int = 128,
            prompt_lengths: Sequence[int] = (128,), new_tokens: int = 128, runs: int = 3,
            genai_python: str | None = None, only: Sequence[str] = ARTIFACTS, export: bool = True,
            progress: bool = True, onnx_kv_cache: str = "auto", rounds: int = 1) -> dict:
    """Export (unless export=False) and measure `only` at every thread count and prompt length, `rounds` times
    over (see the module's docstring) → the JSON bench_peers writes."""
    if rounds < 1 or runs < 1:
        raise UserError("--rounds and --runs take a positive number")
    unknown = [n for n in only if n not in ARTIFACTS]
    if unknown:
        raise UserError(f"unknown artifact(s) {', '.join(unknown)}; choose from {', '.join(ARTIFACTS)}")
    model = str(Path(model).resolve())  # the exports run in other directories
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        raise UserError(f"--model {model}: no config.json there; bench-peers needs a local Hugging Face checkpoint "
                        "directory (the peers' exporters read it too)")
    config = json.loads(config_file.read_text())
    genai_python = genai_python or sys.executable
    if "ort-genai" in only:
        check_genai(genai_python)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench-peers.log"
    say = (lambda text: print(f"bench-peers: {text}", file=sys.stderr, flush=True)) if progress else (lambda text: None)
    record = work / "exports.json"
    context = max(prompt_lengths) + new_tokens  # every artifact holds the longest prompt and its new tokens
    if export:
        exports = export_all(model, work, group, context, genai_python, only, log, say, onnx_kv_cache)
        previous = json.loads(record.read_text()) if record.is_file() else {}
        record.write_text(json.dumps({**previous, **exports}, indent=2))
    else:
        exports = json.loads(record.read_text()) if record.is_file() else {}
        missing = [n for n in only if not artifact_path(work, n).exists()]
        if missing:
            raise UserError(f"--no-export: {', '.join(missing)} not in {work}; run once without --no-export")
    say("measuring read bandwidth")
    bandwidth = measure_bandwidth(threads, work)
    # each setting measures every artifact back to back, so a drift in the host's speed over the run (a
    # neighbour, the clock) lands on ours and the peers alike rather than between them; a round is one such sweep,
    # each measurement in a fresh process; rows are then listed by artifact
    artifacts = {name: (streamed_bytes(work, name, config, group), artifact_bytes(work, name)) for name in only}
    measured: dict[tuple, list[dict]] = {}
    for round_ in range(rounds):
        for t in threads:
            for prompt_len in prompt_lengths:
                for name in only:
                    kind = {"ort-genai": "ort-genai", "executorch-export-llm": "pte"}.get(name, "bundle")
                    python = genai_python if name == "ort-genai" else sys.executable
                    say(f"measuring {name} on {t} thread(s), {prompt_len}-token prompt"
                        + (f" (round {round_ + 1} of {rounds})" if rounds > 1 else ""))
                    measured.setdefault((name, t, prompt_len), []).append(_measure_in_child(
                        python, kind, artifact_path(work, name), t, prompt_len, new_tokens, runs,
                        config["vocab_size"]))
    rows = []
    for name in only:
        read, size = artifacts[name]
        for t in threads:
            for prompt_len in prompt_lengths:
                speed = _over_rounds(measured[name, t, prompt_len])
                bw = bandwidth[str(t)]
                tok_s = speed["decode_tokens_per_s"]["median"]
                rows.append({
                    "bundle": str(artifact_path(work, name)), "name": name, "peer": name in PEER_NAMES,
                    "size_bytes": size, "export": exports.get(name),
                    "latency": {"threads": t, "prompt_tokens": prompt_len, "ttft_ms": speed["ttft_ms"]["median"],
                                "ttft_ms_spread": speed["ttft_ms"],
                                "prefill_tokens_per_s": speed["prefill_tokens_per_s"]["median"],
                                "decode_tokens_per_s": tok_s,
                                "decode_tokens_per_s_spread": speed["decode_tokens_per_s"],
                                "decode_ms_p50": speed["decode_ms_p50"], "decode_ms_p95": speed["decode_ms_p95"],
                                "new_tokens": new_tokens, "runs": runs, "rounds": rounds,
                                "decode_tokens_per_s_rounds": speed["rounds"]},
                    "memory": {"peak_rss_bytes": speed["peak_rss_bytes"], "size_bytes": size},
                    "bandwidth_limit": {"read_bytes_per_token": read, "bandwidth_gb_s": bw,
                                        "limit_tokens_per_s": bw * 1e9 / read if isinstance(bw, float) else None,
                                        "of_limit": tok_s * read / (bw * 1e9) if isinstance(bw, float) else None},
                })
    ours_onnx = artifact_path(work, "ours-onnx") / "manifest.json"
    if ours_onnx.is_file():  # what "auto" chose
        onnx_kv_cache = json.loads(ours_onnx.read_text())["kv_cache"]["dtype"]
    for row in rows:  # against the faster peer at the same thread count and prompt length, round by round
        key = (row["latency"]["threads"], row["latency"]["prompt_tokens"])
        peers = [r["latency"]["decode_tokens_per_s_rounds"] for r in rows
                 if r["peer"] and (r["latency"]["threads"], r["latency"]["prompt_tokens"]) == key]
        row["vs_faster_peer"] = statistics.median(
            ours / max(peer[i] for peer in peers)
            for i, ours in enumerate(row["latency"]["decode_tokens_per_s_rounds"])) if peers else None
    return {"created_by": "python -m tools.bench_peers", "date": time.strftime("%Y-%m-%d"),
            "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "processor": platform.processor() or "unknown"},
            "model": str(model),
            "settings": {"threads": list(threads), "group_size": group, "prompt_lengths": list(prompt_lengths),
                         "new_tokens": new_tokens, "runs": runs, "rounds": rounds, "context": context,
                         "ours_onnx_kv_cache": onnx_kv_cache},
            "bandwidth_gb_s": bandwidth, "bundles": rows}


def _over_rounds(speeds: list[dict]) -> dict:
    """One artifact's measurements at one setting, a fresh process per round, as one: the median of the rounds'
    medians with the extremes of all runs; each round's decode median kept for the ratios."""
    def joined(key: str) -> dict:
        return {"median": statistics.median(s[key]["median"] for s in speeds),
                "min": min(s[key]["min"] for s in speeds), "max": max(s[key]["max"] for s in speeds)}

    return {**{key: joined(key) for key in ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s")},
            "decode_ms_p50": statistics.median(s["decode_ms_p50"] for s in speeds),
            "decode_ms_p95": statistics.median(s["decode_ms_p95"] for s in speeds),
            "peak_rss_bytes": max(s["peak_rss_bytes"] for s in speeds),
            "rounds": [s["decode_tokens_per_s"]["median"] for s in speeds]}


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    s = dict(result["settings"])
    s.setdefault("prompt_lengths", [s.get("prompt_tokens")])  # runs before --prompt-lengths had one length
    s.setdefault("ours_onnx_kv_cache", "float32")  # and an fp32 ONNX cache
    # runs before this tool moved to tools/ name its old command
    created_by = result["created_by"].replace("python -m exporter bench-peers", "python -m tools.bench_peers")
    lines = [f"# qwen-edge against its peers ({result['date']})", "",
             f"Model {Path(result['model']).name}; prompts of {', '.join(map(str, s['prompt_lengths']))} tokens, "
             f"{s['new_tokens']} greedy new tokens, a warm-up then {s['runs']} runs"
             + (f" in each of {s['rounds']} rounds (a fresh process per artifact, setting and round; the artifacts "
                "interleaved), medians of the rounds' medians [min, max of all runs], × faster peer the median of the "
                "rounds' ratios" if s.get("rounds", 1) > 1 else ", medians [min, max]") + "; group/block "
             f"{s['group_size']}; ours' ONNX KV cache {s['ours_onnx_kv_cache']}. Read bandwidth (GB/s): "
             + ", ".join(f"{t} thread(s) {bw:.1f}" if isinstance(bw, float) else f"{t}: {bw}"
                         for t, bw in result["bandwidth_gb_s"].items())
             + f". Made by `{created_by}`.", "",
             "| artifact | threads | prompt | decode tok/s [min, max] | × faster peer | of limit | TTFT ms | peak RSS MB "
             "| size MB | read/token MB | export s | export peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["bundles"]:
        lat, lim, exp = r["latency"], r["bandwidth_limit"], r["export"] or {}
        spread = lat["decode_tokens_per_s_spread"]
        lines.append(
            f"| {r['name']} | {lat['threads']} | {lat['prompt_tokens']} | {lat['decode_tokens_per_s']:.1f} "
            f"[{spread['min']:.1f}, {spread['max']:.1f}] "
            f"| {_ratio(r['vs_faster_peer'])} | " + (f"{lim['of_limit']:.0%}" if lim["of_limit"] is not None else "–")
            + f" | {lat['ttft_ms']:.0f} | {r['memory']['peak_rss_bytes'] / 1e6:.0f} | {r['size_bytes'] / 1e6:.0f} | "
            f"{lim['read_bytes_per_token'] / 1e6:.0f} | "
            + (f"{exp['seconds']:.0f} | {exp['peak_rss_bytes'] / 2**30:.2f} |" if exp else "– | – |"))
    lines += ["", "Of limit = decode tok/s × bytes read per token ÷ read bandwidth at that thread count; bytes read "
                  "per token = the artifact less the tables a step only gathers a row of (KV cache not counted). Peak "
                  "RSS is the measuring process's, KV cache and runtime included (ExecuTorch's Python runtime also "
                  "loads libtorch, which a phone's runtime does not)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser, default=None, required=True, metavar="DIR|tiny",
                   help="a local Hugging Face Qwen3 checkpoint, e.g. m06 from `python -m exporter make-model --shape "
                        "0.6b --out m06`")
    parser.add_argument("--work", required=True, metavar="DIR", help="where the four artifacts and the log go")
    parser.add_argument("--threads", default="1,2", metavar="N,N", help="thread counts (default: 1,2)")
    parser.add_argument("--group-size", type=int, default=128, metavar="G",
                        help="int4 group / block size for all (default: 128, export_llm's)")
    parser.add_argument("--prompt-lengths", default="128", metavar="N,N",
                        help="prompt lengths; decode is measured after each (default: 128)")
    parser.add_argument("--kv-cache", default="auto", choices=("auto", "float32", "float16", "int8"),
                        help="our ONNX bundle's KV cache (default: auto, the exporter's default: int8 for int4)")
    max_new_tokens_argument(parser, 128, "greedy new tokens")
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs after a warm-up (default: 3)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="sweeps over every artifact and setting, each measurement in a fresh process: a row "
                             "is the median of its rounds, and its ratio to the faster peer the median of the "
                             "rounds' ratios (default: 1; 3 evens out a shared host's drift)")
    parser.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {', '.join(ARTIFACTS)}")
    parser.add_argument("--genai-python", metavar="PYTHON", help="an interpreter with onnxruntime-genai "
                                                                 "(default: this one; pip install -e '.[peers]')")
    parser.add_argument("--no-export", action="store_true", help="measure the artifacts already in --work")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """python -m tools.bench_peers --model DIR --work DIR [...]: one line on stderr and exit 2 for user errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
        lengths = [int(n) for n in args.prompt_lengths.split(",")]
    except ValueError:
        print("error: --threads and --prompt-lengths take comma-separated integers", file=sys.stderr)
        return 2
    try:
        from runtimes.checkpoint import resolve_model_dir

        model = str(resolve_model_dir(args.model)) if args.model == "tiny" else args.model
        result = compare(model, args.work, threads=threads, group=args.group_size, prompt_lengths=lengths,
                         new_tokens=args.max_new_tokens, runs=args.runs, rounds=args.rounds,
                         genai_python=args.genai_python,
                         onnx_kv_cache=args.kv_cache,
                         export=not args.no_export, only=args.only.split(",") if args.only else ARTIFACTS)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = markdown(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        # the measuring child: python -m tools.bench_peers KIND PATH THREADS PROMPT NEW RUNS VOCAB
        kind, path, *numbers = sys.argv[1:8]
        print(json.dumps(measure_one(kind, path, *map(int, numbers))))
    else:
        sys.exit(main())
