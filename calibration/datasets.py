"""Calibration sets: text → deterministic token windows for AWQ and activation statistics.

Sources: `builtin` (bundled docs text + chat-formatted arithmetic with thinking), `arithmetic`
(the `tiny` model's own problems), or a user file: `.txt` (plain text) or `.jsonl` (one object per
line: {"text": ...} or {"messages": [...]}, chat rendered with the Qwen3 template; an assistant turn
may carry its thinking as `reasoning_content` or inline `<think>` … `</think>`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from runtimes.eval.arithmetic import problems
from runtimes.chat import render
from runtimes.errors import UserError
from runtimes.files import read_text_file

DATA = Path(__file__).parent / "data"
ARITHMETIC_SEED = 4242  # disjoint from training draws in practice, and from the held-out seed 1234


@dataclass
class CalibrationSet:
    tokens: torch.Tensor  # int64 [samples, seq_len]
    source: str
    sha256: str  # of the token windows, so a recipe names exactly what it saw


def arithmetic_chats(n: int, seed: int = ARITHMETIC_SEED) -> list[str]:
    out = []
    for p in problems(n, seed=seed):
        messages = [{"role": "user", "content": p.question},
                    {"role": "assistant", "content": str(p.answer), "reasoning_content": p.working()}]
        out.append(render(messages, add_generation_prompt=False))
    return out


def read_texts(source: str) -> list[str]:
    if source == "builtin":
        return [(DATA / "stdlib_docs.txt").read_text()] + arithmetic_chats(400)
    if source == "arithmetic":
        return arithmetic_chats(2000)
    path = Path(source)
    text = read_text_file(path, "--calib", "pass builtin, arithmetic, or a UTF-8 .txt/.jsonl file")
    if path.suffix == ".jsonl":
        return _read_jsonl(path, text)
    if not text.strip():
        raise UserError(f"--calib {source} is empty; give it text to calibrate on")
    return [text]


def _read_jsonl(path: Path, text: str) -> list[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        except RecursionError:
            raise UserError(f"{path}:{number}: nests its JSON too deeply to read; each line must be one flat JSON "
                            "object") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            texts.append(record["text"])
        elif isinstance(record, dict) and isinstance(record.get("messages"), list):
            try:
                texts.append(render(record["messages"], add_generation_prompt=False))
            except (UserError, KeyError, TypeError, AttributeError) as exc:
                raise UserError(f"{path}:{number}: bad messages ({exc})") from None
        else:
            raise UserError(f'{path}:{number}: expected {{"text": "..."}} or {{"messages": [...]}}')
    if not texts:
        raise UserError(f"--calib {path} has no records; write one JSON object per line")
    return texts


def calibration_set(source: str, encode, samples: int = 128, seq_len: int = 512, seed: int = 0) -> CalibrationSet:
    """`samples` windows of `seq_len` tokens, drawn deterministically from the source's token stream."""
    if samples < 1 or seq_len < 2:
        raise UserError("calibration needs --samples >= 1 and --seq-len >= 2")
    stream: list[int] = []
    for text in read_texts(source):
        stream.extend(encode(text))
    if len(stream) < seq_len:
        raise UserError(f"--calib {source} gives only {len(stream)} tokens, fewer than one window of --seq-len "
                        f"{seq_len}; give more text or lower --seq-len")
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(stream) - seq_len + 1) for _ in range(samples)]
    tokens = torch.tensor([stream[s:s + seq_len] for s in starts], dtype=torch.long)
    digest = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()
    return CalibrationSet(tokens, source, digest)
