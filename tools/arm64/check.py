"""Run bundles on aarch64 kernels under QEMU user mode and compare them with this host and with the reference.

    python -m tools.arm64.check --root ROOT --bundle B [--bundle B ...] [--cpu neoverse-n1 --cpu cortex-a72]
        [--numbers FILE.json] [--work DIR]

ROOT is tools/arm64/build_root.sh's Debian arm64 root. For each CPU model, one emulated Python (the root's 3.11,
PyPI's aarch64 wheels, this tree's code) runs `python -m exporter verify --bundle B --json` for every bundle
(tools/arm64/guest.py); the exit status is 1 when any bundle fails verify on any CPU model. With --numbers, the
host also builds each bundle's parity reference (torch: the fake-quant model for quantized bundles), takes its chat
generation of a few prompts (greedy, with a thinking budget) as the token path, and records the chat's greedy ids
and teacher-forced logits on the reference, on this host's kernels and on each aarch64 CPU model, with the ISA
features each CPU model shows programs (AT_HWCAP); FILE gets the comparison (the data of docs/benchmarks.md's
aarch64 table).

QEMU runs inside a private mount namespace (unshare -m, so root) where /sys/devices/system/cpu is the root's fake
one (possible/present/online = 0-1, nothing else): onnxruntime's cpuinfo segfaults on the host's CPU topology
seen through QEMU, and QEMU's -L prefix only adds files, it cannot hide the host's.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtimes.backends.executorch_runner import RUNNER_ENV
from runtimes.bundle import read_manifest
from runtimes.errors import UserError

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).with_name("guest.py")

# QEMU CPU models and the ISA each gives ONNX Runtime's MLAS and XNNPACK: with and without the dot-product
# instructions (int8 GEMMs: SDOT/UDOT vs widening multiplies). SVE models (max, a64fx) run about ten times slower
# under QEMU (issue 33: 812 vs 72 ms per token), so neither is a default.
CPU_MODELS = {
    "neoverse-n1": "ARMv8.2-A with dotprod, fp16 (Neoverse N1, as Cortex-A76 phones)",
    "cortex-a72": "ARMv8.0-A without dotprod (Cortex-A72)",
}
# AT_HWCAP bits (Linux arm64 uapi hwcap.h) that decide kernel paths: int8 dot products, fp16 arithmetic, SVE
HWCAP_BITS = {"asimddp (dotprod)": 20, "asimdhp (fp16)": 10, "sve": 22}
PROMPTS = ("What is the capital of France?", "def fibonacci(n):")
NEW_TOKENS = 16
THINKING_BUDGET = 8


def guest_env(root: Path | None) -> dict:
    paths = [str(REPO)] + ([str(root / "opt/qwen-edge/deps")] if root else [])
    return {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": ":".join(paths), "PYTHONNOUSERSITE": "1",
            "LANG": "C.UTF-8", "HOME": str(Path.home())}


def qemu_command(root: Path, cpu: str, argv: list[str]) -> list[str]:
    """argv (an aarch64 program in ROOT and its arguments) under qemu-aarch64-static, with the fake CPU list."""
    script = 'mount --bind "$1/sys/devices/system/cpu" /sys/devices/system/cpu && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(root),
            "qemu-aarch64-static", "-cpu", cpu, "-L", str(root), *argv]


def cpu_features(root: Path, cpu: str) -> list[str]:
    """The HWCAP features of HWCAP_BITS that QEMU's `cpu` model shows an aarch64 program."""
    probe = "import ctypes; print(ctypes.CDLL(None).getauxval(16))"
    done = subprocess.run(qemu_command(root, cpu, [str(root / "usr/bin/python3.11"), "-c", probe]),
                          env=guest_env(root), capture_output=True, text=True, check=True)
    hwcap = int(done.stdout.split()[-1])
    return [name for name, bit in HWCAP_BITS.items() if hwcap >> bit & 1]


def run_guest(plan: Path, root: Path | None, cpu: str | None, runner: Path | None = None) -> tuple[int, float, str]:
    """The guest over a plan → (exit status, seconds, output): on this host (cpu None); in the root's Python under
    QEMU; or, with `runner`, on this host's Python with ExecuTorch's numbers from the aarch64 runner under QEMU."""
    env = guest_env(root if cpu and not runner else None)
    if cpu is None or runner:
        argv = [sys.executable, str(GUEST), str(plan)]
        if runner:
            env[RUNNER_ENV] = shlex.join(qemu_command(root, cpu, [str(runner)]))
    else:
        argv = qemu_command(root, cpu, [str(root / "usr/bin/python3.11"), str(GUEST), str(plan)])
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def reference_paths(bundle: Path) -> tuple[str, list[dict], list[np.ndarray]]:
    """The bundle's parity reference (torch, this host): its chat generation for each of PROMPTS (greedy, the
    thinking budget) as token paths, and its teacher-forced logits over them → (reference name, cases, [logits])."""
    from runtimes.reference import bundle_reference
    from runtimes.generate import prepare_prompt, run
    from runtimes.tokenizer import QwenTokenizer

    from tools.arm64.guest import teacher_forced

    manifest = read_manifest(bundle)
    reference, name = bundle_reference(manifest, None, bundle)
    tokenizer = QwenTokenizer(bundle)
    sequences, logits = [], []
    for text in PROMPTS:
        messages = [{"role": "user", "content": text}]
        prompt, _ = prepare_prompt(tokenizer, messages, THINKING_BUDGET)
        reference.reset()
        result = run(reference, tokenizer, messages, budget=THINKING_BUDGET, max_new_tokens=NEW_TOKENS)
        ids = prompt + result.token_ids
        sequences.append({"content": text, "budget": THINKING_BUDGET, "max_new_tokens": NEW_TOKENS, "ids": ids,
                          "split": len(prompt)})
        logits.append(teacher_forced(reference, ids, len(prompt)))
    return name, sequences, logits


def compare(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    """Teacher-forced logits on the same token paths: the largest |difference|, the top-1 agreement, and where the
    argmaxes differ, the widest gap between `theirs`' top two logits (a flip at a near tie is rounding)."""
    diff = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(ours, theirs))
    ours_all, theirs_all = np.concatenate(ours), np.concatenate(theirs)
    agree = ours_all.argmax(-1) == theirs_all.argmax(-1)
    top2 = np.sort(theirs_all[~agree], axis=-1)[:, -2:]
    return {"max_abs_logit_diff": diff, "top1_agreement": float(agree.mean()), "positions": int(agree.size),
            "max_disagreement_margin": float((top2[:, 1] - top2[:, 0]).max()) if len(top2) else None}


def _backend_name(bundle: Path) -> str | None:
    """The manifest's backend, read without verifying (verify, on aarch64, reports what is wrong with the bundle)."""
    try:
        return json.loads((bundle / "manifest.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def load_run(path: Path, count: int) -> tuple[list[list[int]], list[np.ndarray]]:
    data = np.load(path)
    return [data[f"greedy_{i}"].tolist() for i in range(count)], [data[f"logits_{i}"] for i in range(count)]


def check(args) -> int:
    if not (args.root / "usr/bin/python3.11").is_file():
        raise UserError(f"{args.root} is not an arm64 root with Python 3.11; build one with tools/arm64/build_root.sh")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise UserError("the aarch64 check runs QEMU in a private mount namespace (unshare -m), which needs root: "
                        + (probe.stderr.strip() or f"exit {probe.returncode}"))
    work = Path(args.work or tempfile.mkdtemp(prefix="arm64-check-"))
    work.mkdir(parents=True, exist_ok=True)
    bundles = [Path(b).resolve() for b in args.bundle]
    keys = {b: f"{i}.{b.name}" for i, b in enumerate(bundles)}  # work file names, unique for same-named bundles
    references = {}
    if args.numbers:
        for b in bundles:
            references[b] = reference_paths(b)

    def plan_for(tag: str, chosen: list[Path], how: str) -> Path:
        entries = [{"bundle": str(b), "verify_json": str(work / f"{keys[b]}.{tag}.verify.json"),
                    "cases": references[b][1] if b in references else [],
                    "out": str(work / f"{keys[b]}.{tag}.npz")} for b in chosen]
        path = work / f"plan.{tag}.{how}.json"
        path.write_text(json.dumps({"bundles": entries}))
        return path

    runs, failed = {}, False
    executorch = [b for b in bundles if _backend_name(b) == "executorch"]
    if executorch and not args.runner:
        raise UserError("ExecuTorch bundles run on aarch64 through the runner: pass --runner (an aarch64 et_runner "
                        "from tools/et_runner/build.sh)")
    jobs = [("x86_64", None, bundles, None)] if args.numbers else []
    for cpu in args.cpu:
        jobs.append((cpu, cpu, [b for b in bundles if b not in executorch], None))
        jobs.append((cpu, cpu, executorch, args.runner))
    for tag, cpu, chosen, runner in jobs:
        if not chosen:
            continue
        code, seconds, output = run_guest(plan_for(tag, chosen, "runner" if runner else "python"), args.root, cpu,
                                          runner)
        where = "this host" if cpu is None else f"aarch64 {cpu}" + (" (ExecuTorch runner)" if runner else "")
        print(f"[{where}] {seconds:.0f} s\n" + output.rstrip(), flush=True)
        runs[tag] = round(runs.get(tag, 0) + seconds, 1)
        if code != 0:
            print(f"error: verify failed on {where} (exit {code})", file=sys.stderr)
            failed = True
    if args.numbers and not failed:
        write_numbers(args, keys, references, work, runs)
    return 1 if failed else 0


def write_numbers(args, keys: dict, references: dict, work: Path, runs: dict) -> None:
    import onnxruntime

    records = []
    for b, key in keys.items():
        name, sequences, ref_logits = references[b]
        ref_ids = [s["ids"][s["split"]:] for s in sequences]
        manifest = read_manifest(b)
        x86_ids, x86_logits = load_run(work / f"{key}.x86_64.npz", len(sequences))
        record = {"bundle": b.name, "target": manifest["target"], "backend": manifest["backend"],
                  "quant": manifest["quant"]["name"], "reference": name,
                  "x86_64": {"greedy_match_reference": x86_ids == ref_ids,
                             "versus_reference": compare(x86_logits, ref_logits)},
                  "aarch64": {}}
        for cpu in args.cpu:
            ids, logits = load_run(work / f"{key}.{cpu}.npz", len(sequences))
            verify = json.loads((work / f"{key}.{cpu}.verify.json").read_text())
            record["aarch64"][cpu] = {"verify_ok": verify["ok"], "greedy_match_x86_64": ids == x86_ids,
                                      "greedy_match_reference": ids == ref_ids,
                                      "versus_x86_64": compare(logits, x86_logits),
                                      "versus_reference": compare(logits, ref_logits)}
        records.append(record)
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    report = {
        "command": "python -m tools.arm64.check " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "host": f"{platform.machine()} {_host_cpu()}", "qemu": qemu, "onnxruntime": onnxruntime.__version__,
        "cpu_models": {cpu: {"description": CPU_MODELS.get(cpu, cpu),
                             "hwcap": cpu_features(args.root, cpu)} for cpu in args.cpu},
        "prompts": list(PROMPTS), "new_tokens": NEW_TOKENS, "thinking_budget": THINKING_BUDGET,
        "seconds": {k: round(v, 1) for k, v in runs.items()}, "bundles": records,
    }
    Path(args.numbers).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.numbers}")


def _host_cpu() -> str:
    """The host's CPU name and the x86 features that pick ONNX Runtime's and XNNPACK's kernels."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} with {', '.join(shown) or 'no AVX2'}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.arm64.check", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the arm64 root (tools/arm64/build_root.sh)")
    p.add_argument("--bundle", action="append", required=True, help="a bundle to run (repeat)")
    p.add_argument("--cpu", action="append", help="a QEMU CPU model (repeat; default neoverse-n1 and cortex-a72)")
    p.add_argument("--runner", type=Path, help="the aarch64 et_runner, for ExecuTorch bundles")
    p.add_argument("--numbers", help="also compare with this host and the reference; write the JSON here")
    p.add_argument("--work", help="where plans, verify results and logits go (default: a new temporary folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.cpu = args.cpu or list(CPU_MODELS)
    args.root = args.root.resolve()
    args.runner = args.runner.resolve() if args.runner else None
    try:
        return check(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
