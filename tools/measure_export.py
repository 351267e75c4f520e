"""Run one command (an export, a quantize, a compile) and record what it cost: wall time, peak RSS, output size.

    python -m tools.measure_export --label "4B shape, Core ML int4" --output OUT_DIR \\
        --json runtimes/eval/bench/example/exports.json -- python -m exporter --model m4b --target coreml --out OUT_DIR

The peak RSS is the largest resident set of the command and every process it waited for (getrusage of the
children, as `/usr/bin/time -v` reports it). The record is appended to --json (replacing one with the same label),
where `python -m tools.benchmarks_doc` renders it; a command that fails is recorded with its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run_measured(command: list[str], stdout=None, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run command → its exit code, wall seconds and peak RSS: the largest resident set of it and of every process
    it waited for (wait4's rusage of this one child, so other children of the caller do not count)."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(command), stdout=stdout, stderr=subprocess.STDOUT if stdout else None, env=env,
                            cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"command": shlex.join(command), "exit_code": proc.returncode,
            "seconds": round(time.perf_counter() - start, 1), "peak_rss_bytes": usage.ru_maxrss * 1024}  # KiB


def measure(command: list[str], output: Path | None) -> dict:
    record = run_measured(command)
    if output is not None and output.exists():
        record["output_bytes"] = tree_bytes(output)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.measure_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="what was measured, as the table shows it")
    parser.add_argument("--json", required=True, type=Path, help="the records file to add to")
    parser.add_argument("--output", type=Path, help="what the command writes, to report its size")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    if command[0] in ("python", "python3"):
        command[0] = sys.executable  # the interpreter this tool runs under, whatever PATH says
    record = {"label": args.label, "date": time.strftime("%Y-%m-%d"),
              "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count()},
              **measure(command, args.output)}
    record["command"] = shlex.join(["python", *command[1:]]) if command[0] == sys.executable else record["command"]
    records = json.loads(args.json.read_text()) if args.json.exists() else {
        "created_by": "python -m tools.measure_export", "records": []}
    records["records"] = [r for r in records["records"] if r["label"] != args.label] + [record]
    args.json.write_text(json.dumps(records, indent=2) + "\n")
    print(f"{args.label}: exit {record['exit_code']}, {record['seconds']} s, "
          f"peak RSS {record['peak_rss_bytes'] / 2**30:.2f} GiB"
          + (f", output {record['output_bytes'] / 1e6:.1f} MB" if "output_bytes" in record else ""))
    return record["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
