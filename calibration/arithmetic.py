"""Synthetic arithmetic problems with digit-by-digit working, in Qwen3's chat format.

The `tiny` model is trained on these and its task accuracy per thinking budget is measured on them.
A working step names the place it works on ("tens 2+9+1=12 c1 r23": digits, carry, result so far),
so a small model can find the right digits; longer numbers need more steps, so a larger thinking
budget lets more problems finish their working.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

PLACES = ("ones", "tens", "hundreds", "thousands", "myriads")
OPS = ("+", "-", "*")
MAX_DIGITS = {"+": 5, "-": 5, "*": 4}  # "*" multiplies by a single digit
ANSWER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    def working(self) -> str:
        """The thinking text: one line per digit place, then the answer."""
        if self.op == "*":
            return _multiply_steps(self.a, self.b)
        if self.op == "+":
            return _add_steps(self.a, self.b)
        return _subtract_steps(self.a, self.b)


def _digits(n: int, width: int) -> list[int]:
    return [int(c) for c in str(n).zfill(width)[::-1]]


def _add_steps(a: int, b: int) -> str:
    width = max(len(str(a)), len(str(b)))
    lines, carry, result = [], 0, ""
    for place, (x, y) in zip(PLACES, zip(_digits(a, width), _digits(b, width))):
        total = x + y + carry
        result = str(total % 10) + result
        lines.append(f"{place} {x}+{y}+{carry}={total} c{total // 10} r{result}")
        carry = total // 10
    if carry:
        result = "1" + result
    lines.append(f"answer {int(result)}")
    return "\n".join(lines)


def _subtract_steps(a: int, b: int) -> str:
    lines = []
    sign = ""
    if a < b:
        lines.append(f"{a} < {b}, so compute {b}-{a} and negate")
        a, b, sign = b, a, "-"
    width = len(str(a))
    borrow, result = 0, ""
    for place, (x, y) in zip(PLACES, zip(_digits(a, width), _digits(b, width))):
        diff = x - y - borrow
        new_borrow = 1 if diff < 0 else 0
        result = str(diff + 10 * new_borrow) + result
        lines.append(f"{place} {x}-{y}-{borrow}={diff + 10 * new_borrow} b{new_borrow} r{result}")
        borrow = new_borrow
    value = int(result)
    lines.append(f"answer {sign if value else ''}{value}")
    return "\n".join(lines)


def _multiply_steps(a: int, b: int) -> str:
    width = len(str(a))
    lines, carry, result = [], 0, ""
    for place, x in zip(PLACES, _digits(a, width)):
        total = x * b + carry
        result = str(total % 10) + result
        lines.append(f"{place} {x}*{b}+{carry}={total} c{total // 10} r{result}")
        carry = total // 10
    if carry:
        result = str(carry) + result
    lines.append(f"answer {int(result)}")
    return "\n".join(lines)


def sample_problem(rng: random.Random) -> Problem:
    """Ops equally likely; operand lengths spread from 1 digit to the op's maximum."""
    op = rng.choice(OPS)
    digits_a = rng.randint(1, MAX_DIGITS[op])
    a = rng.randint(0 if digits_a == 1 else 10 ** (digits_a - 1), 10 ** digits_a - 1)
    if op == "*":
        b = rng.randint(0, 9)
    else:
        digits_b = rng.randint(1, MAX_DIGITS[op])
        b = rng.randint(0 if digits_b == 1 else 10 ** (digits_b - 1), 10 ** digits_b - 1)
    return Problem(a, op, b)


def problems(n: int, seed: int, exclude: set[Problem] | None = None) -> list[Problem]:
    """n distinct problems, deterministic for a seed, none of them in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        p = sample_problem(rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def heldout_problems(n: int = 500) -> list[Problem]:
    """The evaluation set: seed 1234. Training draws from other seeds and skips these problems."""
    return problems(n, seed=1234)


def parse_answer(content: str) -> int | None:
    """The integer an answer states (the first one), or None."""
    match = ANSWER.search(content)
    return int(match.group()) if match else None
