"""What runs on the aarch64 side (under QEMU) and, for comparison, on the host: torch-free.

`python tools/arm64/guest.py PLAN.json` reads a plan {"bundles": [{"bundle", "verify_json", "sequences", "out"}]}:
for each bundle it runs `python -m exporter verify --bundle B --json F` (the CLI itself, in this process, so the ARM
step checks whatever verify checks), then, where the plan gives cases (a chat message, its thinking budget and
answer limit, and the reference's token path), the chat's greedy generation as `chat` and parity run it (the budget
may force `</think>`) and teacher-forced logits over the reference's path, saved as one .npz per bundle. Exit
status: 1 when any bundle failed verify.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from exporter.cli import main as exporter_main
from runtimes.bundle import load_backend
from runtimes.generate import run
from runtimes.tokenizer import QwenTokenizer


def teacher_forced(backend, ids: list[int], split: int) -> np.ndarray:
    """Logits [len(ids) - 1, vocab] predicting each token after the prompt's first: prefill, then decode steps."""
    backend.reset()
    rows = [backend.prefill(ids[:split], all_logits=True)] + [backend.decode(t)[None] for t in ids[split:-1]]
    return np.concatenate(rows).astype(np.float32)


def run_bundle(entry: dict) -> int:
    code = exporter_main(["verify", "--bundle", entry["bundle"], "--json", entry["verify_json"]])
    if code != 0 or not entry.get("cases"):
        return code
    backend = load_backend(Path(entry["bundle"]))
    tokenizer = QwenTokenizer(Path(entry["bundle"]))
    arrays = {}
    for i, case in enumerate(entry["cases"]):
        backend.reset()
        result = run(backend, tokenizer, [{"role": "user", "content": case["content"]}], budget=case["budget"],
                     max_new_tokens=case["max_new_tokens"])
        arrays[f"greedy_{i}"] = np.array(result.token_ids, dtype=np.int64)
        arrays[f"logits_{i}"] = teacher_forced(backend, case["ids"], case["split"])
    np.savez(entry["out"], machine=np.array(platform.machine()), **arrays)
    return 0


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    codes = [run_bundle(entry) for entry in plan["bundles"]]
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
