"""`python -m exporter`: argument parsing only; every subcommand calls one library function."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading
from pathlib import Path

from runtimes.errors import UserError

TARGETS = ("onnx", "executorch", "coreml", "all")
QUANTS = ("fp32", "fp16", "int8", "int4", "awq-int4", "8da4w")
SHAPES = ("0.6b", "1.7b", "4b")

MAIN_DESCRIPTION = """\
Export a Qwen3 checkpoint to phone-ready bundles (ONNX, ExecuTorch, Core ML), then check,
measure and chat with them. With no subcommand, exports:

  python -m exporter --model tiny --target onnx --quant int4 --out dist/tiny-onnx

subcommands (python -m exporter SUBCOMMAND --help for each):
  export      export a checkpoint to one target or all (the default command)
  parity      compare an exported bundle, or the edge module itself, against a reference
  bench       measure latency, memory, size, energy and accuracy of bundles
  bench-peers export one checkpoint with ours and the peers' toolchains, measure all alike
  chat        talk to a model or bundle with a thinking budget
  quantize    write a quantized checkpoint once, for every target to reuse
  make-model  write a random-weight checkpoint with a real Qwen3 shape
  verify      check a bundle's manifest, files and paths, then run it briefly
  deploy      copy a bundle into the Android or iOS demo app
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see: {self.prog} --help)")


def _model_arg(p: argparse.ArgumentParser, required: bool = False, default: str | None = "tiny") -> None:
    p.add_argument("--model", default=None if required else default, required=required, metavar="DIR|HUB_ID|tiny",
                   help="Qwen3 checkpoint: a local Hugging Face directory (config.json + *.safetensors), "
                        "a hub id such as Qwen/Qwen3-0.6B (needs network), or 'tiny', the bundled model "
                        f"(default: {default})")


def _quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-size", type=int, choices=(32, 64, 128),
                   help="int4 group size; smaller is more accurate and larger (default: the largest of 128, 64, "
                        "32 that divides every linear's input width: 128 for Qwen3 0.6B-4B, 64 for tiny)")
    p.add_argument("--asymmetric", action="store_true",
                   help="int4 with a zero point per group (default: symmetric, which every target runs)")
    p.add_argument("--embedding", default="int8", choices=("int8", "int4", "none"),
                   help="embedding / LM head table: int8 per row, int4 group-wise, or none (default: int8)")
    p.add_argument("--calib", default="builtin", metavar="builtin|arithmetic|FILE",
                   help="AWQ calibration data: builtin (bundled docs + chat arithmetic), arithmetic (the tiny "
                        "model's problems), or a .txt / .jsonl file (default: builtin)")
    p.add_argument("--samples", type=int, default=128, metavar="N", help="calibration windows (default: 128)")
    p.add_argument("--seq-len", type=int, default=512, metavar="N", help="tokens per window (default: 512)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where AWQ's calibration and searches run: cuda uses a GPU when torch sees one (one block "
                        "at a time on it; the model stays in host memory); round-to-nearest needs none (default: cpu)")


def _export_args(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--target", choices=TARGETS,
                   help="onnx: ONNX Runtime (CPU, mobile, NPU EPs); executorch: .pte for XNNPACK; "
                        "coreml: stateful .mlpackage for iOS 18 / macOS 15; all: one bundle per target")
    p.add_argument("--quant", choices=QUANTS,
                   help="weight precision: fp32/fp16 unquantized, int8 per channel, int4 group-wise (RTN), "
                        "awq-int4 activation-aware int4, 8da4w (executorch only: int4 RTN weights with 8-bit "
                        "dynamic activations; on executorch int8/int4/awq-int4 also run with 8-bit dynamic "
                        "activations, XNNPACK's only low-bit kernels) (default: int4, or the recipe of a "
                        "quantized --model)")
    _quant_options(p)
    p.add_argument("--max-seq-len", type=int, metavar="N",
                   help="context length the bundle supports (default: 1024, or the model's maximum if smaller)")
    p.add_argument("--profile", default="cpu", choices=("cpu", "npu"),
                   help="onnx only. cpu: one dynamic graph with ONNX Runtime's MatMulNBits (CPU, mobile); npu: "
                        "static-shape prefill and decode graphs with standard QDQ ops, as NPU execution providers "
                        "such as QNN require (default: cpu)")
    p.add_argument("--npu-chunk", type=int, default=32, metavar="N",
                   help="tokens per prefill call of the npu profile (default: 32)")
    p.add_argument("--activations", choices=("float", "int8"),
                   help="how int4 linears see their input. onnx: float (default, exact to the fake-quant weights) "
                        "or int8 (ONNX Runtime quantizes activations per weight group and runs integer dot "
                        "products: faster, slightly less exact); executorch: always int8 for quantized linears "
                        "(XNNPACK's only low-bit kernels); coreml: float")
    p.add_argument("--delegate", default="xnnpack", choices=("xnnpack", "coreml", "qnn"),
                   help="executorch only. xnnpack: every phone's CPU (default); coreml: Apple's Neural Engine via "
                        "ExecuTorch's Core ML delegate; qnn: Qualcomm NPUs (needs the QNN SDK)")
    p.add_argument("--out", metavar="DIR",
                   help="bundle directory to write; with --target all, one subdirectory per target")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory this tool wrote (never the input model, ~, . or /)")


def build_parser() -> tuple[Parser, dict[str, Parser]]:
    main = Parser(prog="python -m exporter", description=MAIN_DESCRIPTION,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    _export_args(main)

    subs: dict[str, Parser] = {}

    def sub(name: str, help_text: str) -> Parser:
        p = Parser(prog=f"python -m exporter {name}", description=help_text)
        subs[name] = p
        return p

    _export_args(sub("export", "Export a checkpoint to one target or all (same as running with no subcommand)."))

    p = sub("parity", "Compare logits and greedy tokens against a reference. With --model, the project's fp32 "
                      "edge module against transformers' Qwen3ForCausalLM; with --bundle, an exported artifact "
                      "against the full-precision and fake-quant references. Exit code 1 when parity fails.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="DIR|HUB_ID|tiny", help="checkpoint whose edge module is checked")
    which.add_argument("--bundle", metavar="DIR", help="exported bundle to check")
    p.add_argument("--prompts", metavar="FILE", help="text file, one prompt per line (default: built-in prompts; "
                                                     "random token ids for a checkpoint without tokenizer)")
    p.add_argument("--new-tokens", type=int, default=32, metavar="N", help="greedy tokens per prompt (default: 32)")
    p.add_argument("--thinking-budget", type=int, metavar="N",
                   help="thinking budget of the chat generations compared for a bundle (default: 32)")
    p.add_argument("--reference", metavar="DIR|HUB_ID|tiny",
                   help="the model a bundle was exported from (default: the source its manifest names)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| allowed (default: 1e-3)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")

    p = sub("bench", "Measure latency, memory, size, energy and accuracy of one or more bundles, side by side: "
                     "speed in a fresh process per bundle (PEERS.md's protocol: fixed prompt ids, greedy tokens, "
                     "one warm-up, medians with [min, max]); accuracy against the fp32 model the bundle came from. "
                     "Writes JSON; Markdown and PNG plots are rendered from it.")
    p.add_argument("--bundle", action="append", required=True, metavar="DIR", help="bundle to measure (repeatable)")
    p.add_argument("--against", metavar="DIR|HUB_ID|tiny",
                   help="full-precision model for accuracy (default: the source each manifest names)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report rendered from the JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots: accuracy vs thinking budget, decode speed "
                                                  "and size per bundle, accuracy vs size")
    p.add_argument("--threads", type=int, metavar="N", help="backend threads (default: the backend's own)")
    p.add_argument("--prompt-lengths", default="32,128", metavar="N,N",
                   help="prompt lengths for time to first token (default: 32,128; the last is the headline)")
    p.add_argument("--new-tokens", type=int, default=64, metavar="N", help="greedy tokens per run (default: 64)")
    p.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs after the warm-up (default: 3)")
    p.add_argument("--text", metavar="FILE", help="held-out text for perplexity (default: held-out arithmetic "
                                                  "chats with their working, which tiny never saw)")
    p.add_argument("--windows", type=int, default=64, metavar="N",
                   help="perplexity windows: held-out chats, one per window, or --text cut into windows (default: 64)")
    p.add_argument("--tasks", default="arithmetic", metavar="arithmetic|FILE",
                   help="task set: 'arithmetic' (tiny's held-out problems) or a .jsonl of {question, answer[, match: "
                        "exact|numeric]} (default: arithmetic)")
    p.add_argument("--problems", type=int, default=50, metavar="N", help="tasks per budget (default: 50)")
    p.add_argument("--budgets", default="0,32,128,none", metavar="LIST",
                   help="thinking budgets for task accuracy; 'none' is unlimited (default: 0,32,128,none)")
    p.add_argument("--no-accuracy", action="store_true", help="speed, memory and energy only")
    p.add_argument("--energy", default="auto", choices=("auto", "rapl", "powermetrics", "nvml", "none"),
                   help="energy meter: auto uses RAPL (Linux) or powermetrics (macOS) where readable; otherwise, "
                        "or with none, energy is an estimate from --soc, labelled so (default: auto)")
    p.add_argument("--soc", default="lpddr5x-4nm-cpu", metavar="PROFILE",
                   help="phone SoC profile for energy estimates (runtimes/bench/soc_profiles.json; default: "
                        "lpddr5x-4nm-cpu)")
    p.add_argument("--android-energy", metavar="FILE",
                   help="energy record exported by the Android demo app (source: android)")

    p = sub("bench-peers", "Export one checkpoint with our exporter (ONNX int4 with int8 activations, ExecuTorch "
                           "8da4w, both with the int4 table) and with the toolchains a user would pick instead "
                           "(onnxruntime-genai's model builder, int4; ExecuTorch's export_llm, 8da4w), then measure "
                           "every artifact at every thread count with one protocol in fresh processes, and the "
                           "machine's read bandwidth for the decode limit. Takes about 15 minutes for the 0.6B shape "
                           "(export_llm alone ~8). Writes bench's JSON and a Markdown table.")
    p.add_argument("--model", required=True, metavar="DIR", help="local Hugging Face Qwen3 checkpoint, e.g. one "
                                                                 "from make-model --shape 0.6b")
    p.add_argument("--work", required=True, metavar="DIR", help="where the four artifacts and the log go")
    p.add_argument("--threads", default="1,2", metavar="N,N", help="thread counts (default: 1,2)")
    p.add_argument("--group-size", type=int, default=128, metavar="G", help="int4 group / block size for all "
                                                                            "(default: 128; export_llm's config is 128)")
    p.add_argument("--prompt-tokens", type=int, default=128, metavar="N", help="prompt length (default: 128)")
    p.add_argument("--new-tokens", type=int, default=128, metavar="N", help="greedy new tokens (default: 128)")
    p.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs after the warm-up (default: 3)")
    p.add_argument("--only", metavar="LIST", help="comma-separated subset of ours-onnx, ours-executorch, "
                                                  "ort-genai, executorch-export-llm (default: all four)")
    p.add_argument("--genai-python", metavar="PYTHON", help="interpreter with onnxruntime-genai (default: this one; "
                                                            "pip install -e '.[peers]')")
    p.add_argument("--no-export", action="store_true", help="measure the artifacts already in --work")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown table")

    p = sub("verify", "Check a bundle before trusting it: the manifest against its JSON Schema and format version, "
                      "every file's size and sha256, no extra files, no path that leaves the bundle (.., absolute "
                      "paths, symbolic links), then load its entry points on the backend here and run a short greedy "
                      "generation. One line per problem; exit 1 when the bundle is bad, 2 for usage errors.")
    p.add_argument("--bundle", required=True, metavar="DIR", help="bundle to verify")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--no-run", action="store_true", help="check files and manifest only; do not load the model")

    p = sub("chat", "Chat with a model or bundle: reasoning streams dimmed, then the answer. Sampling defaults "
                    "come from the checkpoint's generation_config.json; --temperature 0 is greedy and deterministic.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="DIR|HUB_ID|tiny", help="checkpoint to run on the reference backend "
                                                                  "(default: tiny)")
    which.add_argument("--bundle", metavar="DIR", help="exported bundle to run on its own backend")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--thinking-budget", type=int, metavar="N",
                        help="max tokens inside <think>; past it the model is told to answer (0: no thinking; "
                             "default: unlimited)")
    budget.add_argument("--no-think", action="store_true", help="answer without thinking (same as budget 0)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="max answer tokens (default: 256)")
    p.add_argument("--max-seq-len", type=int, metavar="N",
                   help="context for --model (default: 2048, or the model's maximum if smaller)")
    p.add_argument("--temperature", type=float, metavar="T", help="0 is greedy")
    p.add_argument("--top-p", type=float, metavar="P")
    p.add_argument("--top-k", type=int, metavar="K")
    p.add_argument("--min-p", type=float, metavar="P")
    p.add_argument("--seed", type=int, metavar="S", help="seed for sampling")
    p.add_argument("--system", metavar="TEXT", help="system message")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("prompt", metavar="PROMPT", help="the user message (/think and /no_think switches work)")

    p = sub("quantize", "Quantize a checkpoint once (RTN int8/int4 or AWQ int4) and write a quantized checkpoint "
                        "(QDIR) that every target and command accepts as --model QDIR, so a slow AWQ run is done once.")
    _model_arg(p)
    p.add_argument("--quant", required=True, choices=("int8", "int4", "awq-int4"),
                   help="int8: per output channel; int4: group-wise round-to-nearest; awq-int4: activation-aware "
                        "scaling and clipping searched on calibration data, then int4")
    _quant_options(p)
    p.add_argument("--out", required=True, metavar="QDIR", help="directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory this tool wrote (never the input model, ~, . or /)")

    p = sub("make-model", "Write a random-weight checkpoint with Qwen3's published config for a size "
                          "(for export, memory and speed work; random weights say nothing about accuracy).")
    p.add_argument("--shape", required=True, choices=SHAPES, help="which Qwen3 size to copy")
    p.add_argument("--layers", type=int, metavar="N", help="keep only N decoder layers (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory this tool wrote (never the input model, ~, . or /)")

    p = sub("deploy", "Put a verified bundle where a demo app finds it. Android: adb push to the app's files dir "
                      "when exactly one device is attached, else stage it in APP_DIR/bundles with the adb command "
                      "to run. iOS: copy it into APP_DIR/App/Bundles. Says what it did.")
    p.add_argument("--bundle", required=True, metavar="DIR", help="bundle to deploy (verified first)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--android", metavar="APP_DIR", help="the Android demo, e.g. android-demo")
    where.add_argument("--ios", metavar="APP_DIR", help="the iOS demo, e.g. ios-demo")
    return main, subs


def check_writable(path: str | None) -> None:
    """Fail before the work, not after it, when a report file cannot be written."""
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    if Path(path).is_dir():
        raise UserError(f"cannot write {path}: it is a directory")


def write_json(path: str, obj) -> None:
    try:
        Path(path).write_text(json.dumps(obj, indent=2))
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}); check that its directory exists") from None


def run_parity(args) -> int:
    from runtimes.parity import model_parity

    if args.new_tokens < 1:
        raise UserError("--new-tokens must be >= 1")
    if args.thinking_budget is not None and args.thinking_budget < 0:
        raise UserError("--thinking-budget must be >= 0 (0 turns thinking off)")
    check_writable(args.json)
    if args.bundle:
        from runtimes.parity import bundle_parity

        budget = 32 if args.thinking_budget is None else args.thinking_budget
        report = bundle_parity(args.bundle, args.prompts, new_tokens=args.new_tokens, tolerance=args.tolerance,
                               thinking_budget=budget, reference_model=args.reference)
    else:
        report = model_parity(args.model, args.prompts, new_tokens=args.new_tokens, tolerance=args.tolerance)
    if args.json:
        write_json(args.json, report)
    against = f" against {report['reference']}" if args.bundle else ""
    kv = f", KV-cache vs recompute {report['kv_cache_max_abs_diff']:.2e}" if "kv_cache_max_abs_diff" in report else ""
    flips = ""
    if report["top1_disagreements"]:
        flips = (f" ({report['top1_disagreements']} disagreements, where the reference's top two logits were at "
                 f"most {report['max_disagreement_margin']:.3g} apart)")
    print(f"parity {'PASSED' if report['passed'] else 'FAILED'}{against}: {len(report['prompts'])} prompts "
          f"({report['prompt_source']}), greedy match {report['greedy_token_match']:.3f}, "
          f"teacher-forced top-1 {report['teacher_forced_top1_agreement']:.4f}{flips}, "
          f"max |dlogit| {report['max_abs_logit_diff']:.2e}, mean KL {report['mean_kl']:.2e}{kv}")
    return 0 if report["passed"] else 1


def check_device(device: str) -> str:
    from exporter.quantize import check_device as check

    return check(device)


def run_quantize(args) -> int:
    from exporter.quantize import quantize_checkpoint

    summary = quantize_checkpoint(args.model, args.quant, args.out, group_size=args.group_size,
                                  symmetric=not args.asymmetric, embedding=args.embedding, calib=args.calib,
                                  samples=args.samples, seq_len=args.seq_len, overwrite=args.overwrite,
                                  device=check_device(args.device))
    recipe = summary["recipe"]
    group = f", group {recipe['group_size']}" if recipe["group_size"] else ""
    print(f"wrote {recipe['method']} int{recipe['bits']}{group} checkpoint ({summary['quantized_weights']} weights "
          f"quantized, embedding {recipe['embedding']}) to {summary['out']} in {summary['seconds']:.1f}s")
    return 0


def run_make_model(args) -> int:
    from exporter.make_model import SHAPES as CONFIGS, write_random_checkpoint

    config = dict(CONFIGS[args.shape])
    if args.layers is not None:
        if not 1 <= args.layers <= config["num_hidden_layers"]:
            raise UserError(f"--layers must be between 1 and {config['num_hidden_layers']} for {args.shape}")
        config["num_hidden_layers"] = args.layers
    out = write_random_checkpoint(args.out, config, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite,
                                  with_tokenizer=True)
    print(f"wrote random-weight Qwen3-{args.shape} ({config['num_hidden_layers']} layers, {args.dtype}, "
          f"real Qwen3 tokenizer) to {out}; random weights: no accuracy claims")
    return 0


def run_chat(args) -> int:
    from dataclasses import asdict

    from runtimes.chat_cli import check_text, open_session, stream_chat
    from runtimes.sampling import SamplingParams

    overrides = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
                 "seed": args.seed}
    SamplingParams(**{k: v for k, v in overrides.items() if v is not None})  # bad values fail before loading
    check_text(args.prompt, "prompt")
    check_text(args.system or "", "--system text")
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    backend, tokenizer, generation_config = open_session(args.model, args.bundle, args.max_seq_len)
    budget = 0 if args.no_think else args.thinking_budget
    result = stream_chat(backend, tokenizer, generation_config, args.prompt, budget=budget, system=args.system,
                         max_new_tokens=args.max_new_tokens, overrides=overrides, stream=not args.json)
    if args.json:
        fields = asdict(result)
        fields.pop("token_ids")
        print(json.dumps(fields, indent=2))
    return 0


def _int_list(text: str, flag: str, allow_none: bool = False) -> list:
    values = []
    for part in text.split(","):
        part = part.strip()
        if allow_none and part.lower() in ("none", "unlimited"):
            values.append(None)
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise UserError(f"{flag} takes comma-separated integers{' or none' if allow_none else ''}, "
                            f"not {part!r}") from None
    return values


def run_verify(args) -> int:
    from runtimes.verify import verify

    check_writable(args.json)
    result = verify(args.bundle, run=not args.no_run)
    if args.json:
        write_json(args.json, result)
    for problem in result["problems"]:
        print(f"{args.bundle}: {problem['message']}")
    for note in result["notes"]:
        print(f"{args.bundle}: note: {note}")
    if not result["ok"]:
        return 1
    if result["ran"]:
        print(f"{args.bundle}: OK; a short greedy generation ran ({result['generation']!r})")
    else:
        why = "--no-run" if args.no_run else "see the note above"
        print(f"{args.bundle}: files and manifest OK; entry points not run ({why})")
    return 0


def run_deploy(args) -> int:
    from exporter.deploy import deploy_android, deploy_ios

    lines = deploy_android(args.bundle, args.android) if args.android else deploy_ios(args.bundle, args.ios)
    for line in lines:
        print(line)
    return 0


def run_bench(args) -> int:
    from runtimes.bench import bench
    from runtimes.bench.report import markdown, plots

    check_writable(args.json)
    check_writable(args.markdown)
    result = bench(args.bundle, against=args.against, threads=args.threads,
                   prompt_lengths=_int_list(args.prompt_lengths, "--prompt-lengths"), new_tokens=args.new_tokens,
                   runs=args.runs, text_file=args.text, windows=args.windows, tasks=args.tasks,
                   problems=args.problems, budgets=_int_list(args.budgets, "--budgets", allow_none=True),
                   soc=args.soc, energy_meter=args.energy, android_energy=args.android_energy,
                   accuracy=not args.no_accuracy)
    report = markdown(result)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.plots:
        for path in plots(result, args.plots):
            print(f"wrote {path}")
    print(report)
    return 0


def run_bench_peers(args) -> int:
    from exporter.checkpoint import resolve_model_dir
    from runtimes.bench.peers import ARTIFACTS, compare, markdown

    model = str(resolve_model_dir(args.model)) if args.model == "tiny" else args.model
    check_writable(args.json)
    check_writable(args.markdown)
    result = compare(model, args.work, threads=_int_list(args.threads, "--threads"), group=args.group_size,
                     prompt_len=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
                     genai_python=args.genai_python, export=not args.no_export,
                     only=args.only.split(",") if args.only else ARTIFACTS)
    report = markdown(result)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        Path(args.markdown).write_text(report)
    print(report)
    return 0


def run_export(args) -> int:
    # --target/--out are checked here, not by argparse, so a typo'd flag is reported first
    missing = [flag for flag, value in (("--target", args.target), ("--out", args.out)) if value is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} required, e.g. python -m exporter --model tiny --target onnx "
                        "--quant int4 --out dist/tiny-onnx")
    from exporter.export import export

    summary = export(args.model, args.target, args.quant, args.out, group_size=args.group_size,
                     symmetric=not args.asymmetric, embedding=args.embedding, calib=args.calib, samples=args.samples,
                     seq_len=args.seq_len, max_seq_len=args.max_seq_len, profile=args.profile,
                     npu_chunk=args.npu_chunk, delegate=args.delegate, activations=args.activations,
                     overwrite=args.overwrite, device=check_device(args.device))
    print(f"wrote {summary['target']} {summary['quant']} bundle ({summary['bytes'] / 1e6:.1f} MB) to "
          f"{summary['out']} in {summary['seconds']:.1f}s")
    for digest in summary["manifest_sha256"]:  # to pin in an app: it proves the manifest is the one exported
        print(f"manifest sha256: {digest}")
    return 0


HANDLERS = {
    "export": run_export,
    "parity": run_parity,
    "bench": run_bench,
    "bench-peers": run_bench_peers,
    "verify": run_verify,
    "chat": run_chat,
    "quantize": run_quantize,
    "make-model": run_make_model,
    "deploy": run_deploy,
}


class Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and kill (a CI timeout, say) unwind like an error: temp dirs are removed on the way out
        signal.signal(signal.SIGTERM, _raise_interrupted)
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        parser, subs = build_parser()
        command = argv[0] if argv and argv[0] in subs else "export"
        rest = argv[1:] if argv and argv[0] in subs else argv
        args = (subs[command] if argv and argv[0] in subs else parser).parse_args(rest)
        return HANDLERS[command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        print("error: interrupted; nothing was left half-written", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: out of disk space{where} ({exc.strerror}); nothing was left half-written, free some space "
              "or choose another --out", file=sys.stderr)
        return 2
