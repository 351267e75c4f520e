"""`python -m exporter bench`: latency, memory, size, energy and accuracy of bundles, side by side."""

from __future__ import annotations

import argparse

from exporter.commands.common import (check_output_dir, check_writable, int_list, max_new_tokens_argument,
                                      memory_argument, need_torch, write_json, write_text)
from runtimes.errors import UserError
from runtimes.eval.bench.measure import BenchOptions, bench
from runtimes.eval.bench.report import markdown, plots
from runtimes.files import read_text_file

SUMMARY = "measure latency, memory, size, energy and accuracy of bundles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", action="append", required=True, metavar="DIR", help="a bundle to measure (repeat)")
    p.add_argument("--against", metavar="DIR|HUB_ID|tiny",
                   help="the full-precision model for accuracy (default: the source each manifest names)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report rendered from the JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots rendered from the JSON")
    p.add_argument("--threads", type=int, metavar="N", help="backend threads (default: the backend's own)")
    p.add_argument("--prompt-lengths", default="32,128", metavar="N,N",
                   help="prompt lengths; time to first token and decode speed are measured after each, the last is "
                        "the headline (default: 32,128)")
    max_new_tokens_argument(p, 64, "greedy tokens per run")
    p.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs after a warm-up (default: 3)")
    p.add_argument("--text", metavar="FILE", help="held-out text for perplexity (default: held-out arithmetic chats)")
    p.add_argument("--windows", type=int, default=64, metavar="N", help="perplexity windows (default: 64)")
    p.add_argument("--tasks", default="arithmetic", metavar="arithmetic|FILE",
                   help="'arithmetic' (tiny's held-out problems) or a .jsonl of {question, answer[, match: "
                        "exact|numeric]} (default: arithmetic)")
    p.add_argument("--problems", type=int, default=50, metavar="N", help="tasks per budget (default: 50)")
    p.add_argument("--budgets", default="0,32,128,none", metavar="LIST",
                   help="thinking budgets for task accuracy; none is unlimited (default: 0,32,128,none)")
    p.add_argument("--no-accuracy", action="store_true", help="speed, memory and energy only")
    p.add_argument("--energy", default="auto", choices=("auto", "rapl", "powermetrics", "nvml", "none"),
                   help="auto reads RAPL (Linux) or powermetrics (macOS) where readable, else estimates from --soc; a "
                        "named meter that cannot be read is an error; none always estimates (default: auto)")
    p.add_argument("--soc", default="lpddr5x-4nm-cpu", metavar="PROFILE",
                   help="phone SoC profile for energy estimates (runtimes/eval/bench/soc_profiles.json)")
    p.add_argument("--android-energy", metavar="FILE",
                   help="an energy record exported by the Android demo app, for the bundle it names")
    memory_argument(p)


def run(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be 1 or more, not {args.threads} (leave it out for the backend's own)")
    check_writable(args.json, "--json", args.bundle)
    check_writable(args.markdown, "--markdown", args.bundle)
    check_output_dir(args.plots, "--plots", args.bundle)
    # read once now, so that a FIFO, a directory or bytes that are not UTF-8 fail before the measuring, not after
    if args.tasks != "arithmetic":
        read_text_file(args.tasks, "--tasks", "give a .jsonl of question/answer pairs, or 'arithmetic'")
    if args.text:
        read_text_file(args.text, "--text", "give a UTF-8 text file for perplexity")
    if not args.no_accuracy:
        need_torch("bench's accuracy (against the PyTorch model; --no-accuracy measures without it)")
    result = bench(args.bundle, BenchOptions(
        against=args.against, threads=args.threads, prompt_lengths=int_list(args.prompt_lengths, "--prompt-lengths"),
        new_tokens=args.max_new_tokens, runs=args.runs, text_file=args.text, windows=args.windows, tasks=args.tasks,
        problems=args.problems, budgets=int_list(args.budgets, "--budgets", allow_none=True), soc=args.soc,
        energy_meter=args.energy, android_energy=args.android_energy, accuracy=not args.no_accuracy))
    report = markdown(result)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        write_text(args.markdown, report)
    if args.plots:
        for path in plots(result, args.plots):
            print(f"wrote {path}")
    print(report)
    return 0
