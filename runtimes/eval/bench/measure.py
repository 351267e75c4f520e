"""`python -m exporter bench`: latency, memory, energy and accuracy of bundles against their full-precision model.

Speed, memory and energy of each bundle are measured in a fresh child process (so peak RSS is that bundle's
alone): the peer benchmark's protocol per prompt length (fixed prompt ids, greedy new tokens one at a time, one warm-up,
then `runs` runs, medians with [min, max]). Accuracy runs here: teacher-forced perplexity, KL and top-1 against
the fp32 source model over held-out windows, and task accuracy per thinking budget for bundle and fp32 side by
side. The JSON is the single result; Markdown and plots are rendered from it (runtimes/eval/bench/report.py).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from runtimes import memory
from runtimes.bundle import load_backend, read_manifest
from runtimes.errors import UserError
from runtimes.eval.bench.energy import available_meter, estimate, import_android, load_profiles, measured
from runtimes.eval.latency import one_run, spread
from runtimes.eval.quality import heldout_windows, teacher_forced
from runtimes.eval.tasks import DEFAULT_BUDGETS, read_tasks, task_accuracy
from runtimes.files import read_text_file
from runtimes.generate import peak_rss_bytes
from runtimes.tokenizer import QwenTokenizer


def _speed_worker(bundle: str, threads: int | None, prompt_lengths: Sequence[int], new_tokens: int, runs: int,
                  meter_kind: str, memory_limit: str | None, queue) -> None:
    try:
        memory.configure(memory_limit)  # the parent's --memory-limit: a spawned child starts without it
        queue.put(("ok", measure_speed(bundle, threads, prompt_lengths, new_tokens, runs, meter_kind)))
    except UserError as exc:
        queue.put(("error", str(exc)))
    except Exception as exc:  # reported to the parent as one line
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_speed(bundle: str, threads: int | None, prompt_lengths: Sequence[int], new_tokens: int, runs: int,
                  meter_kind: str = "auto") -> dict:
    """Latency per prompt length, decode speed, peak RSS and (where a meter exists) measured decode energy."""
    backend = load_backend(bundle, threads=threads)
    vocab = read_vocab(bundle)
    meter = None if meter_kind == "none" else available_meter(meter_kind)
    by_length, decode_runs, energy = [], [], None
    for length in prompt_lengths:
        prompt = np.random.default_rng(length).integers(0, min(vocab, 1000), length).tolist()
        one_run(backend, prompt, new_tokens)  # warm-up
        if meter is not None and length == prompt_lengths[-1]:
            meter.begin()
        results = [one_run(backend, prompt, new_tokens) for _ in range(runs)]
        if meter is not None and length == prompt_lengths[-1]:
            energy = measured(meter.end(), runs * (length + new_tokens), meter.source,
                              note="whole runs (prefill + decode) / tokens processed")
        by_length.append({"prompt_tokens": length, **{k: spread([r[k] for r in results])
                                                      for k in ("ttft_ms", "prefill_tokens_per_s",
                                                                "decode_tokens_per_s")}})
        decode_runs = results
    return {
        "threads": threads or "backend default",
        "by_prompt_length": by_length,
        "new_tokens": new_tokens, "runs": runs,
        "decode_tokens_per_s": spread([r["decode_tokens_per_s"] for r in decode_runs]),
        "decode_ms_p50": statistics.median(r["per_token_ms_p50"] for r in decode_runs),
        "decode_ms_p95": statistics.median(r["per_token_ms_p95"] for r in decode_runs),
        "peak_rss_bytes": peak_rss_bytes(),
        "energy": energy,
        # what ran it: an npu bundle's execution provider, and on Qualcomm's HTP the SoC and whether it was simulated
        "execution": backend.describe() if hasattr(backend, "describe") else None,
    }


def read_vocab(bundle: str) -> int:
    return read_manifest(bundle)["architecture"]["vocab_size"]


def _speed_in_child(bundle: str, threads, prompt_lengths, new_tokens, runs, meter_kind) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_speed_worker, args=(bundle, threads, list(prompt_lengths), new_tokens, runs,
                                                   meter_kind, memory.setting(), queue))
    proc.start()
    try:
        status, value = queue.get()
    finally:
        proc.join()
    if status != "ok":
        raise UserError(f"measuring {bundle} failed: {value}")
    return value


def heldout_text_windows(tokenizer, text_file: str | None, n: int, length: int) -> tuple[list[list[int]], str]:
    if text_file is None:
        return heldout_windows(tokenizer, n, length), "arithmetic chats with working (held-out, seed 1234)"
    path = Path(text_file)
    ids = tokenizer.encode(read_text_file(path, "--text", "give a UTF-8 text file for perplexity"))
    if len(ids) < length + 1:
        raise UserError(f"{text_file} has {len(ids)} tokens; perplexity needs at least {length + 1}")
    return [ids[i:i + length] for i in range(0, len(ids) - length + 1, length)][:n], str(path)


@dataclass(frozen=True)
class BenchOptions:
    """What `bench` measures and how (the command's flags)."""
    against: str | None = None  # the full-precision model accuracy is measured against (default: each source)
    threads: int | None = None
    prompt_lengths: Sequence[int] = (32, 128)
    new_tokens: int = 64
    runs: int = 3
    text_file: str | None = None  # held-out text for perplexity (default: the bundled text)
    windows: int = 64
    window_len: int = 256
    tasks: str = "arithmetic"
    problems: int = 50
    budgets: Sequence[int | None] = DEFAULT_BUDGETS
    soc: str = "lpddr5x-4nm-cpu"
    energy_meter: str = "auto"
    android_energy: str | None = None
    accuracy: bool = True
    progress: bool = True


def bench(bundles: Sequence[str], options: BenchOptions = BenchOptions()) -> dict:
    o = options
    if not bundles:
        raise UserError("give at least one --bundle DIR")
    if o.soc not in load_profiles():
        raise UserError(f"unknown --soc {o.soc!r}; choose one of {', '.join(sorted(load_profiles()))}")
    for flag, value in (("--runs", o.runs), ("--max-new-tokens", o.new_tokens), ("--windows", o.windows),
                        ("--problems", o.problems)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1 (got {value})")
    manifests = {b: read_manifest(b) for b in bundles}  # every input is checked before any slow work
    task_items = read_tasks(o.tasks, o.problems) if o.accuracy else None
    if o.accuracy and o.text_file is not None and not Path(o.text_file).is_file():
        raise UserError(f"--text {o.text_file}: no such file")
    android = import_android(o.android_energy) if o.android_energy else None
    if android is not None and android["bundle"] not in [Path(b).name for b in bundles]:
        raise UserError(f"{o.android_energy} records bundle {android['bundle']!r}, which is none of the --bundle "
                        "directories; the record counts for the bundle it was measured on only")
    if o.energy_meter not in ("auto", "none"):
        available_meter(o.energy_meter)  # a named meter that cannot be read here fails now, not as a silent estimate
    fp_cache: dict[str, dict] = {}
    rows = []
    steps = len(bundles) * (2 if o.accuracy else 1)
    with tqdm(total=steps, desc="bench", unit="step", disable=not o.progress) as bar:
        for bundle in bundles:
            manifest = manifests[bundle]
            lengths = [n for n in o.prompt_lengths if n + o.new_tokens <= manifest["max_seq_len"]]
            if not lengths:
                raise UserError(f"{bundle}: every --prompt-lengths value + --max-new-tokens exceeds its context "
                                f"of {manifest['max_seq_len']}")
            bar.set_postfix_str(f"{Path(bundle).name}: speed")
            speed = _speed_in_child(bundle, o.threads, lengths, o.new_tokens, o.runs, o.energy_meter)
            bar.update(1)
            row = _row(bundle, manifest, speed)
            if android is not None and android["bundle"] == Path(bundle).name:
                row["energy"] = android
            elif speed["energy"] is not None:
                row["energy"] = speed["energy"]
            else:
                row["energy"] = estimate(*_traffic(manifest, lengths[-1] + o.new_tokens // 2), tokens=1,
                                         profile=o.soc)
            if o.accuracy:
                bar.set_postfix_str(f"{Path(bundle).name}: accuracy")
                row["accuracy"] = _accuracy(bundle, manifest, o, fp_cache, task_items)
                bar.update(1)
            rows.append(row)
    return {"created_by": "python -m exporter bench", "date": time.strftime("%Y-%m-%d"),
            "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "processor": platform.processor() or "unknown"},
            "settings": {"threads": o.threads, "prompt_lengths": list(o.prompt_lengths), "new_tokens": o.new_tokens,
                         "runs": o.runs, "soc_profile": o.soc, "energy_meter": o.energy_meter},
            "bundles": rows}


def _row(bundle: str, manifest: dict, speed: dict) -> dict:
    last = speed["by_prompt_length"][-1]
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    config = configuration(manifest)
    execution = speed.get("execution")
    if execution:
        config["execution_provider"] = execution_label(execution)
    return {
        "bundle": str(bundle), "target": manifest["target"], "backend": manifest["backend"],
        "quant": manifest["quant"]["name"], "config": config, "size_bytes": size,
        **({"execution": execution} if execution else {}),
        "latency": {"threads": speed["threads"], "prompt_tokens": last["prompt_tokens"],
                    "ttft_ms": last["ttft_ms"]["median"], "prefill_tokens_per_s": last["prefill_tokens_per_s"]["median"],
                    "decode_tokens_per_s": speed["decode_tokens_per_s"]["median"],
                    "decode_tokens_per_s_spread": speed["decode_tokens_per_s"],
                    "decode_ms_p50": speed["decode_ms_p50"], "decode_ms_p95": speed["decode_ms_p95"],
                    "new_tokens": speed["new_tokens"], "runs": speed["runs"],
                    "by_prompt_length": speed["by_prompt_length"]},
        "memory": {"peak_rss_bytes": speed["peak_rss_bytes"], "size_bytes": size,
                   "kv_cache_bytes_at_max_context": manifest["kv_cache"]["bytes_at_max_context"]},
    }


def configuration(manifest: dict) -> dict:
    """Everything that tells two bundles of one target and quant apart (bench rows and tables show it)."""
    quant = manifest["quant"]
    return {"activations": quant.get("activations", "float"), "embedding": quant.get("embedding", "none"),
            "group_size": quant.get("group_size"), "profile": manifest.get("profile", "cpu"),
            "kv_cache": manifest["kv_cache"]["dtype"],
            "execution_provider": EXECUTION_PROVIDERS.get((manifest["backend"], manifest.get("profile")),
                                                          EXECUTION_PROVIDERS.get(manifest["backend"]))}


EXECUTION_PROVIDERS = {"onnxruntime": "CPUExecutionProvider", "executorch": "XNNPACK",
                       ("executorch", "coreml"): "Core ML", "coreml": "Core ML", "reference": "PyTorch"}


def execution_label(execution: dict) -> str:
    """What ran a bundle, as the tables show it; timings on Qualcomm's HTP simulator are labelled not phone speed."""
    if "soc" not in execution:
        return execution["execution_provider"]
    where = "simulated on an x86 host: not phone speed" if execution["simulated"] else "on the phone"
    return f"{execution['execution_provider']}, HTP v{execution['htp_arch']} {execution['soc']}, {where}"
META_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "genai_config.json")


def table_bytes(manifest: dict) -> float:
    """The embedding / LM head table as the bundle stores it (codes and scales)."""
    arch, quant = manifest["architecture"], manifest["quant"]
    values = arch["vocab_size"] * arch["hidden_size"]
    if quant["name"] in ("fp32", "fp16"):
        return values * (4 if quant["name"] == "fp32" else 2)
    embedding = quant.get("embedding", "int8")
    if embedding == "int8":
        return values + arch["vocab_size"] * 4  # a code a weight, a scale a row
    if embedding == "int4":
        return values / 2 + values / (quant.get("group_size") or 128) * 4
    return values * 4


def bytes_read_per_token(manifest: dict, context: int) -> float:
    """What one decoded token reads from memory: every weight the step multiplies by, and the KV cache up to
    `context`. Left out: what a step only gathers a row of, i.e. an embedding table the LM head does not read
    too (an untied model's, or ExecuTorch's gather copy beside XNNPACK's packed head); a tied head that reads the
    same stored table (ONNX, Core ML) reads all of it. An npu bundle's precompiled HTP contexts (qnn-<soc>/) are
    left out too: each is one SoC's copy of the weights the step reads once."""
    size = sum(e["bytes"] for name, e in manifest["files"].items()
               if name not in META_FILES and not name.startswith("qnn-"))
    tied = manifest["architecture"]["tie_word_embeddings"]
    gathered_only = table_bytes(manifest) if (not tied or manifest["target"] == "executorch") else 0.0
    kv = manifest["kv_cache"]["bytes_at_max_context"] * context / manifest["max_seq_len"]
    return max(size - gathered_only, 0.0) + kv


def _traffic(manifest: dict, context: int) -> tuple[float, float]:
    """(bytes read, operations) per decoded token; two operations per multiply-accumulate of every weight the step
    multiplies by (the LM head included)."""
    arch = manifest["architecture"]
    h, layers = arch["hidden_size"], arch["num_hidden_layers"]
    q, kvd = arch["num_attention_heads"] * arch["head_dim"], arch["num_key_value_heads"] * arch["head_dim"]
    per_layer = h * (q + 2 * kvd) + q * h + 3 * h * arch["intermediate_size"]
    params = layers * per_layer + arch["vocab_size"] * h
    return bytes_read_per_token(manifest, context), 2.0 * params


def _accuracy(bundle, manifest, options: BenchOptions, fp_cache, task_items) -> dict:
    from runtimes.backends.reference import ReferenceBackend  # torch: bench --no-accuracy runs without it

    tokenizer, o = QwenTokenizer(bundle), options
    source = o.against or manifest["source_model"]["id"]
    max_len = manifest["max_seq_len"]
    length = min(o.window_len, max_len)
    if source not in fp_cache:
        fp = ReferenceBackend.from_model(source, max_seq_len=max_len)
        fp_cache[source] = {"backend": fp, "task": {}}
    fp_entry = fp_cache[source]
    fp = fp_entry["backend"]
    if fp.max_seq_len < length:
        fp_entry["backend"] = fp = ReferenceBackend.from_model(source, max_seq_len=length)
    token_windows, text_source = heldout_text_windows(tokenizer, o.text_file, o.windows, length)
    backend = load_backend(bundle, manifest)
    tf = teacher_forced(backend, fp, token_windows)
    items, task_source = task_items
    curve = []
    for budget in o.budgets:
        key = (task_source, len(items), budget)
        if key not in fp_entry["task"]:
            fp_entry["task"][key] = task_accuracy(fp, tokenizer, items, budget)["accuracy"]
        curve.append({"thinking_budget": "unlimited" if budget is None else budget, "n": len(items),
                      "accuracy": task_accuracy(backend, tokenizer, items, budget)["accuracy"],
                      "fp_accuracy": fp_entry["task"][key]})
    return {"fp_model": source, "text": text_source, "positions": tf["positions"], "perplexity": tf["perplexity"],
            "fp_perplexity": tf["perplexity_reference"], "kl_vs_fp": tf["mean_kl"],
            "top1_agreement_vs_fp": tf["top1_agreement"], "tasks": task_source, "task": curve}
