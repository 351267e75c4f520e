"""Markdown and PNG plots rendered from bench JSON (never recomputed)."""

from __future__ import annotations

from pathlib import Path


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _name(row: dict) -> str:
    return Path(row["bundle"]).name


def describe(config: dict | None) -> str:
    """A bundle's configuration in a few words: activations, table, KV cache, profile and execution provider."""
    if not config:
        return ""
    parts = [f"{config['activations']} activations", f"table {config['embedding']}", f"KV {config['kv_cache']}"]
    if config["profile"] not in ("cpu", None):
        parts.append(f"profile {config['profile']}")
    return ", ".join(parts) + f" ({config['execution_provider']})"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"# qwen-edge bench ({result['date']})", "",
        f"Machine: {result['machine']['system']} {result['machine']['machine']}, {result['machine']['cpus']} CPUs. "
        f"Threads: {s['threads'] or 'backend default'}; {s['new_tokens']} greedy new tokens, {s['runs']} runs after "
        f"a warm-up, medians. Made by `{result['created_by']}`.", "",
        "| bundle | target | quant | configuration | size MB | TTFT ms | prefill tok/s | decode tok/s [min, max] "
        "| p50 / p95 ms | peak RSS MB | KV MB at max | J/token (source) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["bundles"]:
        lat, mem, en = r["latency"], r["memory"], r["energy"]
        spread = lat["decode_tokens_per_s_spread"]
        source = en["source"] + (f": {en['profile']}" if en["source"] == "estimate" else "")
        lines.append(
            f"| {_name(r)} | {r['target']} | {r['quant']} | {describe(r.get('config'))} | {_mb(r['size_bytes'])} "
            f"| {lat['ttft_ms']:.0f} "
            f"({lat['prompt_tokens']} tok) | {lat['prefill_tokens_per_s']:.0f} | {lat['decode_tokens_per_s']:.1f} "
            f"[{spread['min']:.1f}, {spread['max']:.1f}] | {lat['decode_ms_p50']:.1f} / {lat['decode_ms_p95']:.1f} "
            f"| {_mb(mem['peak_rss_bytes'])} | {_mb(mem['kv_cache_bytes_at_max_context'])} "
            f"| {en['joules_per_token']:.3g} ({source}) |")
    with_accuracy = [r for r in result["bundles"] if "accuracy" in r]
    if with_accuracy:
        first = with_accuracy[0]["accuracy"]
        lines += ["", f"Accuracy against the full-precision model ({first['fp_model']}), teacher-forced over "
                      f"{first['positions']} positions of {first['text']}; tasks: {first['tasks']}.", "",
                  "| bundle | perplexity (fp) | KL vs fp | top-1 vs fp | " +
                  " | ".join(f"task @ budget {t['thinking_budget']} (fp)" for t in first["task"]) + " |",
                  "|---|---|---|---|" + "---|" * len(first["task"])]
        for r in with_accuracy:
            a = r["accuracy"]
            tasks = " | ".join(f"{t['accuracy']:.1%} ({t['fp_accuracy']:.1%})" for t in a["task"])
            lines.append(f"| {_name(r)} | {a['perplexity']:.3f} ({a['fp_perplexity']:.3f}) | {a['kl_vs_fp']:.2e} "
                         f"| {a['top1_agreement_vs_fp']:.2%} | {tasks} |")
    estimates = sorted({r["energy"]["profile"] for r in result["bundles"] if r["energy"]["source"] == "estimate"})
    if estimates:
        lines += ["", f"Energy marked `estimate` is not a measurement: DRAM bytes and operations per decoded token "
                      f"times the constants of SoC profile {', '.join(estimates)} "
                      "(runtimes/eval/bench/soc_profiles.json, with their sources)."]
    return "\n".join(lines) + "\n"


def plots(result: dict, out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result["bundles"]
    written = []
    with_accuracy = [r for r in rows if "accuracy" in r]
    if with_accuracy:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [str(t["thinking_budget"]) for t in with_accuracy[0]["accuracy"]["task"]]
        xs = range(len(labels))
        ax.plot(xs, [t["fp_accuracy"] for t in with_accuracy[0]["accuracy"]["task"]], "k--o", label="full precision")
        for r in with_accuracy:
            ax.plot(xs, [t["accuracy"] for t in r["accuracy"]["task"]], "-o", label=_name(r))
        ax.set_xticks(list(xs), labels)
        ax.set_xlabel("thinking budget (tokens)")
        ax.set_ylabel("task accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("accuracy vs thinking budget")
        written.append(_save(fig, out / "accuracy_vs_budget.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in with_accuracy:
            best = max(t["accuracy"] for t in r["accuracy"]["task"])
            ax.scatter(r["size_bytes"] / 1e6, best)
            ax.annotate(_name(r), (r["size_bytes"] / 1e6, best), fontsize=7)
        ax.set_xlabel("bundle size (MB)")
        ax.set_ylabel("best task accuracy over budgets")
        ax.set_title("accuracy vs size")
        written.append(_save(fig, out / "accuracy_vs_size.png"))

    by_length = [r for r in rows if len(r["latency"]["by_prompt_length"]) > 1]
    if by_length:  # how cost grows with the context (--prompt-lengths with several values)
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
        for r in by_length:
            points = [p for p in r["latency"]["by_prompt_length"] if "decode_tokens_per_s" in p]
            lengths = [p["prompt_tokens"] for p in points]
            left.plot(lengths, [p["decode_tokens_per_s"]["median"] for p in points], "-o", label=_name(r))
            right.plot(lengths, [p["ttft_ms"]["median"] for p in points], "-o", label=_name(r))
        for ax, label in ((left, "decode tokens/s"), (right, "time to first token (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("prompt tokens (context)")
            ax.set_ylabel(label)
        right.set_yscale("log")
        left.legend(fontsize=7)
        fig.suptitle(f"cost vs context ({result['settings']['threads'] or 'default'} thread(s))")
        written.append(_save(fig, out / "context_scaling.png"))

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    names = [_name(r) for r in rows]
    left.barh(names, [r["latency"]["decode_tokens_per_s"] for r in rows])
    left.set_xlabel("decode tokens/s")
    right.barh(names, [r["size_bytes"] / 1e6 for r in rows])
    right.set_xlabel("size (MB)")
    right.set_yticks([])
    fig.suptitle("decode speed and size per bundle")
    written.append(_save(fig, out / "speed_and_size.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
