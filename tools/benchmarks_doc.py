"""Write docs/benchmarks.md and its plots from the measurement JSON the repo keeps.

    python -m tools.benchmarks_doc [--examples runtimes/eval/bench/example] [--out docs]

Every table on that page is rendered from a JSON file written by one of the project's commands (`bench`,
`tools.bench_peers`, `tools.train_tiny --evaluate`); every plot is drawn from the same JSON by code in the repo.
Nothing is typed in by hand, so re-running a measurement and then this script updates the page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtimes.eval.bench import report
from tools.bench_peers import markdown as peers_markdown

# (file, heading, what it measures, the command that wrote it)
SECTIONS = [
    ("defaults-0.6b-2l.json", "Default ONNX export against the best flags: 0.6B shape, 2 layers",
     "`default` is `--target onnx --quant int4` with nothing else; `best` adds `--embedding int4 --activations "
     "int8` (the fastest flags that pass parity); `old` is the previous default (`--embedding int8 --activations "
     "float`); `et` is `--target executorch --quant 8da4w`. `default` and `best` are the same bundle, byte for "
     "byte (one manifest sha256), so their rows differ by noise only. The run on record shared the 2 cores with other "
     "jobs (load average about 6): compare rows within it, not with other tables.",
     "python -m exporter make-model --shape 0.6b --layers 2 --out m06-2\n"
     "python -m exporter --model m06-2 --target onnx --quant int4 --out m06-2-default\n"
     "python -m exporter --model m06-2 --target onnx --quant int4 --embedding int4 --activations int8 --out m06-2-best\n"
     "python -m exporter --model m06-2 --target onnx --quant int4 --embedding int8 --activations float --out m06-2-old\n"
     "python -m exporter --model m06-2 --target executorch --quant 8da4w --out m06-2-et\n"
     "python -m exporter bench --no-accuracy --bundle m06-2-default --bundle m06-2-best --bundle m06-2-old "
     "--bundle m06-2-et --threads 2 --json defaults-0.6b-2l.json"),
    ("defaults-0.6b.json", "Default ONNX export against the best flags: 0.6B shape, all 28 layers",
     "The same four exports of the full-depth random-weight 0.6B shape.",
     "python -m exporter make-model --shape 0.6b --out m06   # then the same exports and bench as above"),
    ("peers-0.6b.json", "Against the peers, short and long context",
     "One run, side by side: ours (the default exports: ONNX int4 with the int4 table, int8 activations and an int8 "
     "KV cache, whose prompts run on float attention; ExecuTorch 8da4w with the int4 table and an int8 cache on our "
     "kernels; and the same ExecuTorch export with `--kv-cache float32`, ExecuTorch's stock cache ops, as its "
     "prebuilt Android library runs them) against ONNX Runtime GenAI's model builder (int4 CPU) and ExecuTorch's "
     "`export_llm` (its Qwen3 XNNPACK 8da4w config), each exported to hold the longest prompt plus the new tokens; "
     "decode is measured after each prompt length, and TTFT is the prompt's prefill plus the first new token. "
     "`--rounds 3`: every artifact ran in three fresh processes per prompt length, the artifacts interleaved, because "
     "one process's speed on this host is bimodal (ours-onnx after 4096 tokens ran at 21-24 or 27-31 tok/s in seven "
     "fresh processes); a row is the median of its rounds, its ratio the median of the rounds' own ratios. The "
     "exports were measured in the same run on a new host; a pip install shared the 2 cores for two minutes of "
     "ours-executorch's exports. Earlier runs on this machine kind measured ours-onnx at 0.90×–0.98× / 1.21×–1.73× / "
     "1.23×–1.78× (128 / 2048 / 4096; 0.97× / 1.43× / 1.48× in the other three-round run) and ORT-GenAI's own speed "
     "at 2048 from 19.7 to 27.8 tok/s: at 128 tokens ours-onnx and ORT-GenAI, the same runtime's MatMulNBits, tie "
     "within this host's spread.",
     "pip install -e \".[dev,peers]\" -c constraints.txt\n"
     "python -m exporter make-model --shape 0.6b --out m06\n"
     "python -m tools.bench_peers --model m06 --work peers06 --threads 2 --prompt-lengths 128,2048,4096 "
     "--max-new-tokens 64 --runs 1 --rounds 3 --json peers-0.6b.json"),
    ("peers-0.6b-2026-11-23.json", "Against the peers: an earlier run, with export cost",
     "A run of 2026-11-23 on a faster host of this machine kind (read bandwidth 31 / 63 GB/s on 1 / 2 threads, "
     "against 27 GB/s on 2 threads in the run above): 128-token prompts, 1 and 2 threads, and what each export cost. "
     "Ours were that day's defaults (float32 KV cache); compare its rows with each other, not with the run above.",
     "python -m exporter make-model --shape 0.6b --out m06\n"
     "python -m tools.bench_peers --model m06 --work peers06 --json peers-0.6b.json"),
    ("kv-cache-0.6b.json", "ONNX KV cache: float32, float16 and int8, short and long context",
     "The default ONNX int4 export of the 0.6B shape with `--max-seq-len 2176`, with `--kv-cache float32`, "
     "`float16` and the default (`int8` for int4 weights); decode is measured after each prompt length.",
     "python -m exporter --model m06 --target onnx --max-seq-len 2176 --kv-cache float32 --out m06-kv32\n"
     "python -m exporter --model m06 --target onnx --max-seq-len 2176 --kv-cache float16 --out m06-kv16\n"
     "python -m exporter --model m06 --target onnx --max-seq-len 2176 --out ours-onnx   # the default: int8\n"
     "python -m exporter bench --no-accuracy --threads 2 --prompt-lengths 128,2048 --max-new-tokens 128 "
     "--bundle m06-kv32 --bundle m06-kv16 --bundle ours-onnx --json kv-cache-0.6b.json"),
    ("scaling-ctx-2.json", "How cost grows with context (2 threads)",
     "Bundles of the 0.6B shape exported with `--max-seq-len 2304` before the fp16 KV cache became the ONNX "
     "default (fp32 caches): decode is measured after each prompt length.",
     "python -m exporter bench --bundle B --prompt-lengths 128,512,2048 --max-new-tokens 128 --no-accuracy "
     "--threads 2 --json scaling-ctx-2.json"),
    ("scaling-ctx-1.json", "How cost grows with context (1 thread)", "As above, on one thread.",
     "python -m exporter bench ... --threads 1 --json scaling-ctx-1.json"),
    ("scaling-size-2.json", "How cost grows with model size (2 threads)",
     "`make-model --shape 0.6b|1.7b|4b`, each exported `--target onnx --quant int4 --group-size 128 --embedding "
     "int4 --activations int8 --max-seq-len 2304`.",
     "python -m exporter bench --bundle B06 --bundle B17 --bundle B4 --prompt-lengths 128 --max-new-tokens 128 "
     "--no-accuracy --threads 2 --json scaling-size-2.json"),
    ("scaling-size-1.json", "How cost grows with model size (1 thread)", "As above, on one thread.",
     "python -m exporter bench ... --threads 1 --json scaling-size-1.json"),
    ("bench.json", "`tiny` on every CPU target: speed, memory, energy estimate and accuracy",
     "`tiny` has 1.65M parameters, so its speed figures measure per-call overhead, not weight bandwidth; use the "
     "0.6B-shape tables for speed. ExecuTorch rows' peak RSS includes libtorch (its Python runtime loads it; the "
     "phone runtime does not).",
     "for t in onnx executorch; do for q in fp32 int8 awq-int4; do\n"
     "  python -m exporter --model tiny --target $t --quant $q --out dist/tiny-$t-$q; done; done\n"
     "python -m exporter bench --bundle dist/tiny-onnx-fp32 ... --bundle dist/tiny-executorch-awq-int4 "
     "--json bench.json"),
]


def _tiny_section(model_dir: Path) -> list[str]:
    """The bundled model's accuracy per thinking budget and its training run (runtimes/models/tiny/*.json)."""
    evaluation = json.loads((model_dir / "eval.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    curve = evaluation["curve"]
    lines = ["## The bundled `tiny` model", "",
             f"Greedy exact-match accuracy on {curve[0]['problems']} held-out arithmetic problems (seed "
             f"{evaluation['heldout_seed']}), from `runtimes/models/tiny/eval.json`, written by "
             "`python -m tools.train_tiny --evaluate runtimes/models/tiny`:", "",
             "| thinking budget | " + " | ".join(c["budget"] for c in curve) + " |",
             "|---|" + "---|" * len(curve),
             "| accuracy | " + " | ".join(f"{c['accuracy']:.1%}" for c in curve) + " |",
             "| cut by the budget | " + " | ".join(f"{c['stopped_by_budget']:.0%}" for c in curve) + " |",
             "| mean thinking tokens | " + " | ".join(f"{c['mean_reasoning_tokens']:.1f}" for c in curve) + " |",
             "", "Training (`runtimes/models/tiny/training.json`, written by `python -m tools.train_tiny`):", "",
             "| stage | examples | steps | batch | learning rate | thinking / non-thinking / truncated | seconds |",
             "|---|---|---|---|---|---|---|"]
    for stage in ("stage1", "stage2"):
        s = training[stage]
        mix = s["mix"]
        lines.append(f"| {stage[-1]} | {s['examples']} | {s['steps']} | {s['batch_size']} | {s['lr']} | "
                     f"{mix['thinking']:.0%} / {mix['non_thinking']:.0%} / {mix['truncated']:.0%} | {s['seconds']} |")
    lines += ["", f"{training['threads']} thread(s), torch {training['torch']}."]
    return lines


def _exports_section(path: Path) -> list[str]:
    """What exports, quantizations and compiles cost (tools/measure_export's records)."""
    records = json.loads(path.read_text())["records"]
    lines = ["## What exports cost", "",
             "Each row is one command run by `python -m tools.measure_export --label L --output OUT --json "
             "runtimes/eval/bench/example/exports.json -- COMMAND`: wall time, the peak resident memory of the "
             "command and its children (as `/usr/bin/time -v` reports it) and the size of what it wrote. Random-weight "
             "models come from `python -m exporter make-model --shape 0.6b|1.7b|4b [--layers N]`.", "",
             "| what | seconds | peak RSS GiB | output MB | exit | date | command |", "|---|---|---|---|---|---|---|"]
    for r in records:
        size = f"{r['output_bytes'] / 1e6:.1f}" if "output_bytes" in r else "–"
        lines.append(f"| {r['label']} | {r['seconds']:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} | {size} "
                     f"| {r['exit_code']} | {r['date']} | `{r['command']}` |")
    return lines


ARM64_COMMAND = ("for q in fp32 int8 int4; do python -m exporter --model tiny --target onnx --quant $q --out onnx-$q; "
                 "done\n"
                 "for q in fp32 8da4w; do python -m exporter --model tiny --target executorch --quant $q "
                 "--max-seq-len 256 --out et-$q; done\n"
                 "tools/arm64/build_root.sh    # the Debian arm64 root, PyPI's aarch64 wheels, the executorch wheel\n"
                 "tools/et_runner/build.sh .cache/arm64/bin .cache/arm64/root/opt/qwen-edge/executorch/executorch\n"
                 "python -m tools.arm64.check --root .cache/arm64/root --runner .cache/arm64/bin/et_runner "
                 "--bundle onnx-fp32 --bundle onnx-int8 --bundle onnx-int4 --bundle et-fp32 --bundle et-8da4w "
                 "--numbers arm64-parity.json")


def _logits(compared: dict) -> str:
    margin = compared["max_disagreement_margin"]
    flips = "" if margin is None else f" (flips at margins <= {margin:.2f})"
    return f"{compared['max_abs_logit_diff']:.2g} | {compared['top1_agreement']:.3f}{flips}"


def _arm64_section(path: Path) -> list[str]:
    """Bundles on aarch64 kernels under QEMU against this host's kernels and the reference (tools/arm64/check)."""
    result = json.loads(path.read_text())
    lines = ["## aarch64 kernels (QEMU) against x86-64 and the reference", "",
             f"Each bundle of `tiny` ran `verify`, then the chat's greedy generation of {len(result['prompts'])} "
             f"prompts (thinking budget {result['thinking_budget']}, {result['new_tokens']} new tokens) and "
             "teacher-forced logits over the reference's generation (prompt and answer positions), on the reference "
             f"(torch; fake-quant for quantized bundles), on this host's kernels ({result['host']}) and on aarch64 "
             f"kernels under {result['qemu']}, once per CPU model. ONNX bundles ran in the arm64 root's Python 3.11 "
             f"with PyPI's aarch64 onnxruntime {result['onnxruntime']}, whose MLAS picks its NEON kernels by the "
             "features the CPU shows (the two CPU models give different int8 and int4 logits, so they took different "
             "paths; which kernel ran is MLAS's choice, not recorded). ExecuTorch bundles ran through `et_runner` "
             "built against the aarch64 executorch wheel's runtime libraries (XNNPACK's aarch64 kernels for every "
             "linear, the wheel's optimized and quantized kernels for the rest) with the runner's own "
             "`llama::update_cache` / `llama::custom_sdpa` kernels (the wheel has ExecuTorch's only inside a "
             "library that links libtorch; docs/executorch.md); both CPU models gave XNNPACK's 8da4w the same "
             "logits (its int8 x int4 products sum in integers, with or without dotprod). |dlogit| is over the whole "
             "vocabulary; top-1 is the fraction of positions whose argmax agrees, with the widest top-2 margin of "
             "the other side where they differ. No phone was run: QEMU executes the aarch64 instructions, not a "
             "phone's timing.", "",
             "Where each target's bundles have been run (numbers against their reference): ONNX CPU bundles on "
             "x86-64 (this host: AVX-512 with VNNI) and on "
             "aarch64 with and without dotprod (below); ONNX NPU bundles on Qualcomm's HTP simulator on x86-64 "
             "(docs/qnn.md); ExecuTorch XNNPACK bundles on x86-64 (ExecuTorch's Python runtime) and on aarch64 with "
             "and without dotprod (et_runner, below); Core ML bundles and ExecuTorch's Core ML and QNN delegates "
             "were not executed (Apple devices, Qualcomm's SDK).",
             "", "```", ARM64_COMMAND, "```", "",
             "| CPU model | what it stands for | AT_HWCAP features it shows (of dotprod, fp16, SVE) |", "|---|---|---|"]
    lines += [f"| {cpu} | {m['description']} | {', '.join(m['hwcap']) or 'none'} |"
              for cpu, m in result["cpu_models"].items()]
    lines += ["", "| bundle | positions | kernels | verify | greedy = x86-64 | greedy = reference "
              "| max \\|dlogit\\| vs x86-64 "
              "| top-1 vs x86-64 | max \\|dlogit\\| vs reference | top-1 vs reference |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for b in result["bundles"]:
        name = f"{b['target']} {b['quant']}"
        x86 = b["x86_64"]
        name += f" | {x86['versus_reference']['positions']}"
        lines.append(f"| {name} | x86-64 (this host) | | | {'yes' if x86['greedy_match_reference'] else 'no'} | | "
                     f"| {_logits(x86['versus_reference'])} |")
        for cpu, r in b["aarch64"].items():
            lines.append(f"| {name} | aarch64 {cpu} | {'pass' if r['verify_ok'] else 'FAIL'} "
                         f"| {'yes' if r['greedy_match_x86_64'] else 'no'} "
                         f"| {'yes' if r['greedy_match_reference'] else 'no'} "
                         f"| {_logits(r['versus_x86_64'])} | {_logits(r['versus_reference'])} |")
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    lines += ["", f"References: " + "; ".join(sorted({f"{b['target']} {b['quant']}: {b['reference']}"
                                                    for b in result["bundles"]})) + ".",
              f"Wall time of the runs (verify and logits, all bundles; 2 shared cores): {seconds}."]
    return lines


def _demote(markdown: str) -> list[str]:
    """A rendered report without its own title (the section heading replaces it)."""
    lines = markdown.rstrip("\n").split("\n")
    return lines[2:] if lines and lines[0].startswith("# ") else lines


def _ratios(result: dict) -> list[str]:
    """For the defaults tables: the default's decode speed over the best flags' at each length."""
    by_name = {Path(r["bundle"]).name.rsplit("-", 1)[-1]: r for r in result["bundles"]}
    if "default" not in by_name or "best" not in by_name:
        return []
    ratio = (by_name["default"]["latency"]["decode_tokens_per_s"]
             / by_name["best"]["latency"]["decode_tokens_per_s"])
    return ["", f"Default over best flags, decode: **{ratio:.2f}x**."]


README_BEGIN = "<!-- peers table: written by python -m tools.benchmarks_doc from peers-0.6b.json -->"
README_END = "<!-- end of peers table -->"


def readme_peers_table(examples: Path) -> list[str]:
    """The README's short table: decode tok/s of each artifact at each prompt length of peers-0.6b.json, with the
    ratio to the faster peer, and the command that measured it."""
    result = json.loads((examples / "peers-0.6b.json").read_text())
    s, rows = result["settings"], result["bundles"]
    lengths = s["prompt_lengths"]
    names = list(dict.fromkeys(r["name"] for r in rows))
    cell = {(r["name"], r["latency"]["prompt_tokens"]): r for r in rows}
    lines = [f"Random-weight Qwen3-0.6B shape (28 layers), {s['threads'][-1]} threads, {s['new_tokens']} greedy tokens "
             f"after a prompt of N tokens, "
             + (f"the median of {s['rounds']} fresh processes × {s['runs']} run{'s' if s['runs'] != 1 else ''}, "
                "interleaved with the peers' and the ratio the median of the rounds' ratios" if s.get("rounds", 1) > 1
                else f"median of {s['runs']} runs")
             + f", measured in one run on {result['date']} "
             f"(our ONNX KV cache: {s['ours_onnx_kv_cache']}). Decode tok/s (× the faster peer), and the time to "
             "the first token:", "",
             "| artifact | " + " | ".join(f"N = {n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for name in names:
        parts = []
        for n in lengths:
            r = cell.get((name, n))
            if r is None or r["latency"]["threads"] != s["threads"][-1]:
                parts.append("–")
                continue
            tok_s, ttft = r["latency"]["decode_tokens_per_s"], r["latency"]["ttft_ms"] / 1000
            parts.append(f"{tok_s:.1f}" + ("" if r["peer"] else f" ({r['vs_faster_peer']:.2f}×)")
                         + f", TTFT {ttft:.{1 if ttft < 10 else 0}f} s")
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    lines += ["", "```", "python -m exporter make-model --shape 0.6b --out m06   # the random-weight 0.6B shape",
              f"python -m tools.bench_peers --model m06 --work peers06 --threads {s['threads'][-1]} "
              f"--prompt-lengths {','.join(map(str, lengths))}"
              + (f" --max-new-tokens {s['new_tokens']}" if s["new_tokens"] != 128 else "")
              + (f" --runs {s['runs']}" if s["runs"] != 3 else "")
              + (f" --rounds {s['rounds']}" if s.get("rounds", 1) != 1 else "") + " --json peers-0.6b.json", "```"]
    return lines


def readme_with_table(readme: str, examples: Path) -> str:
    """README.md with the text between README_BEGIN and README_END replaced by readme_peers_table."""
    if README_BEGIN not in readme or README_END not in readme:
        return readme
    start, end = readme.index(README_BEGIN) + len(README_BEGIN), readme.index(README_END)
    return readme[:start] + "\n" + "\n".join(readme_peers_table(examples)) + "\n" + readme[end:]


def render(examples: Path, out: Path, model_dir: Path) -> str:
    lines = ["# Benchmarks", "",
             "Generated by `python -m tools.benchmarks_doc` from the JSON in `runtimes/eval/bench/example/` and "
             "`runtimes/models/tiny/`; do not edit by hand. Each section names the command that wrote its JSON. "
             "Measured on a 2-vCPU x86-64 virtual machine with 24 GiB: no phone, no GPU, no RAPL counters, so every "
             "energy figure is an estimate (labelled so). Speed on a phone differs; compare rows within one table, "
             "which were measured in one run."]
    img = out / "img"
    for name, title, note, command in SECTIONS:
        path = examples / name
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        body = peers_markdown(result) if name.startswith("peers") else report.markdown(result)
        lines += ["", f"## {title}", "", note, "", "```", command, "```", ""] + _demote(body)
        if name.startswith("defaults"):
            lines += _ratios(result)
        plots = peers_plots(result, img / path.stem) if name.startswith("peers") else report.plots(result,
                                                                                                    img / path.stem)
        for plot in plots:
            lines += ["", f"![{plot.stem.replace('_', ' ')}](img/{path.stem}/{plot.name})"]
    if (examples / "arm64-parity.json").exists():
        lines += [""] + _arm64_section(examples / "arm64-parity.json")
    if (examples / "exports.json").exists():
        lines += [""] + _exports_section(examples / "exports.json")
    lines += [""] + _tiny_section(model_dir)
    return "\n".join(lines) + "\n"


def peers_plots(result: dict, out_dir: Path) -> list[Path]:
    """Decode tok/s and time to first token against the prompt length, one line per artifact (peers dashed), at the
    run's largest thread count; nothing for a run of one prompt length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = result["settings"]["threads"][-1]
    rows = [r for r in result["bundles"] if r["latency"]["threads"] == threads]
    lengths = sorted({r["latency"]["prompt_tokens"] for r in rows})
    if len(lengths) < 2:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (speed, first) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r["latency"]["prompt_tokens"])
        style = "--o" if mine[0]["peer"] else "-o"
        xs = [r["latency"]["prompt_tokens"] for r in mine]
        speed.plot(xs, [r["latency"]["decode_tokens_per_s"] for r in mine], style, label=name)
        first.plot(xs, [r["latency"]["ttft_ms"] / 1000 for r in mine], style, label=name)
    for ax, label in ((speed, "decode tokens/s"), (first, "time to first token (s)")):
        ax.set_xlabel("prompt tokens before decoding")
        ax.set_ylabel(label)
        ax.set_xticks(lengths)
        ax.grid(alpha=0.3)
    speed.legend(fontsize=7)
    fig.suptitle(f"{Path(result['model']).name}, {threads} threads, {result['date']} (peers dashed)")
    path = out_dir / "context_scaling.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmarks_doc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--examples", type=Path, default=root / "runtimes/eval/bench/example")
    parser.add_argument("--model", type=Path, default=root / "runtimes/models/tiny")
    parser.add_argument("--out", type=Path, default=root / "docs")
    parser.add_argument("--readme", type=Path, default=root / "README.md",
                        help="the README whose peers table to rewrite (default: this checkout's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(args.examples, args.out, args.model)
    (args.out / "benchmarks.md").write_text(text)
    print(f"wrote {args.out / 'benchmarks.md'}")
    if args.readme.is_file() and (args.examples / "peers-0.6b.json").is_file():
        readme = args.readme.read_text()
        updated = readme_with_table(readme, args.examples)
        if updated != readme:
            args.readme.write_text(updated)
            print(f"wrote the peers table into {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
