"""tests/golden/tamper.json applied to the Python verifier: one bundle contract, three verifiers.

Each case's steps run on a fresh copy of the fixture bundle, then `verify` must report exactly the set of problem
codes the case expects (none: the bundle is OK). The Android core (TamperTableTest.java) and the Swift core
(TamperTableTests.swift) apply the same table. A problem is a (code, message) pair: a dict with "code" and
"message", or a 2-tuple.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from runtimes.verify import verify

ROOT = Path(__file__).resolve().parent.parent
TABLE = json.loads((ROOT / "tests" / "golden" / "tamper.json").read_text(encoding="utf-8"))
CASES = TABLE["cases"]
SECONDS_PER_CASE = 30  # a verifier that opens a FIFO blocks; fail the case instead of hanging the suite


def tokens(pointer: str) -> list[str]:
    """RFC 6901 reference tokens: "/a/b~1c" → ["a", "b/c"]."""
    assert pointer.startswith("/"), pointer
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def apply(document, path: list[str], value=None, remove: bool = False) -> None:
    """Set (or remove) the value at `path` in place; "-" or the length appends to an array."""
    parent = document
    for token in path[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = path[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if remove:
            del parent[index]
        elif index == len(parent):
            parent.append(value)
        else:
            parent[index] = value
    elif remove:
        del parent[last]
    else:
        parent[last] = value


def manifest_text(document) -> str:
    """The exporter's manifest format (exporter/bundle.py)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_digest(bundle: Path) -> None:
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    (bundle / "manifest.sha256").write_bytes(f"{digest}  manifest.json\n".encode())


def run_step(step: dict, bundle: Path) -> None:
    op = step["op"]
    path = bundle / step["path"] if "path" in step else None
    if op in ("set", "remove"):
        document = json.loads((bundle / "manifest.json").read_bytes())
        apply(document, tokens(step["pointer"]), step.get("value"), remove=op == "remove")
        (bundle / "manifest.json").write_bytes(manifest_text(document).encode())
        if not step.get("keep_digest"):
            write_digest(bundle)
    elif op == "write_manifest_text":
        (bundle / "manifest.json").write_bytes(step["text"].encode())
    elif op == "write":
        path.write_bytes(step["text"].encode())
    elif op == "append":
        with open(path, "ab") as f:
            f.write(step["text"].encode())
    elif op == "delete":
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    elif op == "symlink":
        os.symlink(step["target"], path)
    elif op == "fifo":
        os.mkfifo(path)
    elif op == "mkdir":
        path.mkdir()
    else:
        raise AssertionError(f"unknown op {op!r}")


def code_of(problem) -> str:
    if isinstance(problem, dict) and "code" in problem:
        return problem["code"]
    if isinstance(problem, (tuple, list)) and len(problem) == 2:
        return problem[0]
    raise AssertionError(f"the verifier reported {problem!r} without a problem code; the contract is "
                         "(code, message) pairs with the codes of tests/golden/tamper.json")


def verify_with_deadline(bundle: Path) -> dict:
    def expired(signum, frame):
        raise TimeoutError(f"verify took over {SECONDS_PER_CASE} s (did it open a FIFO?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(SECONDS_PER_CASE)
    try:
        return verify(bundle, run=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_table_is_well_formed():
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))
    used = {code for case in CASES for code in case["expect"]}
    assert used == set(TABLE["codes"]), "every code is expected by some case, and only those codes"
    assert all(set(case) == {"name", "steps", "expect"} for case in CASES)


def test_set_rewrites_the_manifest_as_the_exporter_writes_it():
    data = (ROOT / TABLE["bundle"] / "manifest.json").read_bytes()
    assert manifest_text(json.loads(data)).encode() == data


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(case, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(ROOT / TABLE["bundle"], bundle)
    for step in case["steps"]:
        run_step(step, bundle)
    result = verify_with_deadline(bundle)
    got = {code_of(problem) for problem in result["problems"]}
    assert got == set(case["expect"]), result["problems"]
    assert result["ok"] is (not case["expect"])
