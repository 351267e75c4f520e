"""A bundle's reference fixture: what its parity reference generated at export, and how a runtime is judged on it.

The exporter runs the bundle's reference (runtimes.reference: the fake-quant model for quantized bundles) through
`run` on a few chat cases, thinking and not, one cut by the thinking budget, and writes `reference_fixture.json`:
per case the prompt's token ids, the greedy token ids, and per step (a step predicts one token) the reference's
top-k logits (ids and values) and the margin between its two largest logits. `verify` replays the cases on the
bundle's own backend (no torch) and `check` judges them with parity's criteria; the app cores mirror `check`
(FixtureCheck.java, FixtureCheck.swift).

Criteria, the same decision parity takes (`judged_by_agreement`): a bundle that computes what its reference
computes must generate the same tokens and keep every top-k logit within EXACT_TOLERANCE of the reference's; one
whose kernels round (fp16, int8 activations, an int8 or fp16 cache, Core ML) is judged by teacher-forced top-1
agreement, at least ROUNDED_MIN_TOP1, or, the fixture having few steps, every disagreement at a near tie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtimes.bundle import Problem, parse_manifest
from runtimes.files import JSON_LIMIT, regular_file
from runtimes.generate import prepare_prompt, run

FIXTURE_FILE = "reference_fixture.json"
FIXTURE_FORMAT = "qwen-edge-reference-fixture"
FIXTURE_VERSION = 1
TOP_K = 8  # logits kept per step: the argmax, its runner-up (the margin) and a few more for |dlogit|
EXACT_TOLERANCE = 1e-3  # parity's default tolerance for bundles that compute what their reference computes
ROUNDED_MIN_TOP1 = 0.99  # rounded bundles: teacher-forced top-1 agreement bar (parity's)
# A rounded bundle's disagreement counts as a near tie when the reference's top two logits were closer than this.
# Rounding kernels move logits by tenths: int4 with int8 activations differed from the x86 host by up to 0.32 under
# ARM CPU models with and without dotprod (issue 33), and a flip needs a margin below the two logits' errors summed
NEAR_TIE_MARGIN = 1.0


@dataclass(frozen=True)
class FixtureCase:
    name: str
    content: str  # the user's message
    thinking_budget: int | None  # tokens inside <think>; 0 is non-thinking mode
    max_new_tokens: int  # answer tokens after </think>


# thinking (a budget long enough that a small model closes </think> itself), /no_think, one budget cut. Every case
# ends: the budget bounds the thinking, max_new_tokens the answer
CASES = (FixtureCase("thinking", "What is 47 + 385?", 24, 16),
         FixtureCase("no_think", "What is 306 * 7? /no_think", None, 16),
         FixtureCase("budget_cut", "What is 4821 - 9377?", 4, 8))


def judged_by_agreement(manifest: dict) -> bool:
    """Whether the bundle's kernels round where its reference cannot follow bit for bit: fp16 (and Core ML, which
    computes in fp16) rounds every weight and activation, dynamically quantized kernels round activations their own
    way, and an int8 or fp16 cache rounds every key and value. The reference rounds alike, but which side of a
    rounding tie a value lands on depends on the CPU's float arithmetic, and a flip moves later logits by more than
    any fixed bound: such bundles are judged by agreement, the others by a logit bound and greedy tokens."""
    quant = manifest["quant"]
    return (quant["name"] == "fp16" or quant.get("activations", "float") != "float"
            or manifest["kv_cache"]["dtype"] in ("float16", "int8") or manifest.get("profile") == "coreml"
            or any(quant.get(f"int{b}_scale_dtype", "float32") != "float32" for b in (4, 8)))


class RecordingBackend:
    """A backend that keeps the logits of every prefill and decode since its last reset: one per generated token
    when `run` drives it, so a greedy run is its own teacher-forced run."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name
        self.max_seq_len = backend.max_seq_len
        self.vocab_size = backend.vocab_size
        self.logits: list[np.ndarray] = []

    @property
    def position(self) -> int:
        return self.backend.position

    def prefill(self, token_ids) -> np.ndarray:
        logits = self.backend.prefill(token_ids)
        self.logits.append(np.asarray(logits, dtype=np.float32).copy())
        return logits

    def decode(self, token_id: int) -> np.ndarray:
        logits = self.backend.decode(token_id)
        self.logits.append(np.asarray(logits, dtype=np.float32).copy())
        return logits

    def reset(self) -> None:
        self.backend.reset()
        self.logits = []


def top_k(logits: np.ndarray, k: int = TOP_K) -> dict:
    """One step's record: the k largest logits (ids by descending value, ties by id) and the top-2 margin."""
    logits = np.asarray(logits, dtype=np.float32)
    ids = np.lexsort((np.arange(logits.size), -logits))[:k]
    values = logits[ids]
    return {"top_ids": [int(i) for i in ids], "top_logits": [float(v) for v in values],
            "margin": float(values[0] - values[1])}


def _messages(case: FixtureCase) -> list[dict]:
    return [{"role": "user", "content": case.content}]


def criterion(manifest: dict) -> dict:
    """The criterion the bundle is judged by, with its numbers: recorded in the fixture for the apps' checkers
    (FixtureCheck.java, FixtureCheck.swift), which read it rather than decide it again."""
    return {"judged_by_agreement": judged_by_agreement(manifest), "exact_tolerance": EXACT_TOLERANCE,
            "rounded_min_top1": ROUNDED_MIN_TOP1, "near_tie_margin": NEAR_TIE_MARGIN}


def record(backend, tokenizer, reference_name: str, manifest: dict) -> dict | None:
    """The fixture: CASES generated greedily by `backend` (the bundle's reference), those whose prompt fits the
    context (a case that reaches the end of the context stops there); None when none fits."""
    recorder = RecordingBackend(backend)
    cases = []
    for case in CASES:
        prompt, thinking = prepare_prompt(tokenizer, _messages(case), case.thinking_budget)
        if len(prompt) >= backend.max_seq_len:
            continue
        result = run(recorder, tokenizer, _messages(case), budget=case.thinking_budget,
                     max_new_tokens=case.max_new_tokens)
        cases.append({"name": case.name, "messages": _messages(case), "thinking_budget": case.thinking_budget,
                      "max_new_tokens": case.max_new_tokens, "thinking": thinking, "prompt_ids": prompt,
                      "token_ids": result.token_ids, "stopped_by_budget": result.stopped_by_budget,
                      # a run that fills the context decodes the last token's position but generates no more
                      "steps": [top_k(row) for row in recorder.logits[:len(result.token_ids)]]})
    if not cases:
        return None
    return {"format": FIXTURE_FORMAT, "version": FIXTURE_VERSION, "reference": reference_name, "top_k": TOP_K,
            "criterion": criterion(manifest), "cases": cases}


def summary(fixture: dict) -> dict:
    """The manifest's record of its fixture (`fixture` in manifest.schema.json)."""
    return {"file": FIXTURE_FILE, "reference": fixture["reference"], "top_k": fixture["top_k"],
            "cases": len(fixture["cases"]), "steps": sum(len(c["steps"]) for c in fixture["cases"])}


def _shape_error(fixture, manifest: dict) -> str | None:
    """Why a parsed fixture cannot be replayed on this bundle, or None."""
    vocab = manifest["architecture"]["vocab_size"]
    if not isinstance(fixture, dict) or fixture.get("format") != FIXTURE_FORMAT:
        return f"is not a {FIXTURE_FORMAT}"
    if fixture.get("version") != FIXTURE_VERSION:
        return f"has version {fixture.get('version')!r}, not {FIXTURE_VERSION}"
    k, cases = fixture.get("top_k"), fixture.get("cases")
    if type(k) is not int or not 2 <= k <= vocab or not isinstance(cases, list) or not cases:
        return "has no top_k between 2 and the vocabulary, or no cases"

    def ids(values, n=None):
        return (isinstance(values, list) and (n is None or len(values) == n)
                and all(type(i) is int and 0 <= i < vocab for i in values))

    for case in cases:
        if not isinstance(case, dict):
            return "has a case that is not an object"
        steps = case.get("steps")
        budget = case.get("thinking_budget")
        if (not ids(case.get("prompt_ids")) or not case["prompt_ids"] or not ids(case.get("token_ids"))
                or not isinstance(steps, list) or len(steps) != len(case["token_ids"]) or not steps
                or not isinstance(case.get("messages"), list) or not case["messages"]
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in case["messages"])
                or type(case.get("thinking")) is not bool
                or not (budget is None or (type(budget) is int and budget >= 0))
                or type(case.get("max_new_tokens")) is not int or case["max_new_tokens"] < 1):
            return f"case {case.get('name')!r} is malformed (ids, steps, messages or limits)"
        for step in steps:
            if (not isinstance(step, dict) or not ids(step.get("top_ids"), k)
                    or not isinstance(step.get("top_logits"), list) or len(step["top_logits"]) != k
                    or not all(isinstance(v, (int, float)) for v in step["top_logits"])
                    or not isinstance(step.get("margin"), (int, float))):
                return f"case {case.get('name')!r} has a malformed step"
    return None


def read(bundle: Path, manifest: dict) -> tuple[dict | None, list[Problem]]:
    """The bundle's fixture, or (None, problems); (None, []) when the bundle has none (exported before fixtures)."""
    record_ = manifest.get("fixture")
    if record_ is None:
        return None, []
    name = record_["file"]
    path = bundle / name
    if name not in manifest["files"] or not regular_file(path):
        return None, [Problem("fixture", f"the manifest's fixture {name!r} is not a listed regular file")]
    if path.stat().st_size > JSON_LIMIT:
        return None, [Problem("fixture", f"{name} is larger than any fixture")]
    try:
        fixture = parse_manifest(path.read_bytes())  # the same strict JSON as the manifest
    except (ValueError, RecursionError, UnicodeError) as exc:
        return None, [Problem("fixture", f"{name} is not valid JSON ({exc})")]
    why = _shape_error(fixture, manifest)
    if why is None and fixture.get("criterion") != criterion(manifest):
        why = "records a criterion other than the one this bundle is judged by (export it again)"
    if why is None and summary(fixture) != record_:
        why = "does not hold what the manifest's fixture record says (reference, top_k, cases, steps)"
    if why:
        return None, [Problem("fixture", f"{name} {why}")]
    return fixture, []


def _teacher_forced(backend, case: dict) -> list[np.ndarray]:
    """The backend's logits per step over the prompt and the reference's tokens (prefill, then one decode each)."""
    backend.reset()
    rows = [np.asarray(backend.prefill(case["prompt_ids"]), dtype=np.float32)]
    for token in case["token_ids"][:-1]:
        rows.append(np.asarray(backend.decode(token), dtype=np.float32))
    return rows


def check(backend, tokenizer, fixture: dict, manifest: dict) -> dict:
    """Replay the fixture on `backend` and judge it → {"passed", "criterion", numbers, per-case records}.

    Each case runs as `chat` runs it (greedy, the case's thinking budget and answer limit); where the tokens match
    the reference's, that run is the teacher-forced one, otherwise the backend is run again on the reference's
    tokens. Prompts are rendered and tokenized here and must equal the fixture's ids."""
    recorder = RecordingBackend(backend)
    records, steps, agreed, max_diff, disagreements = [], 0, 0, 0.0, []
    for case in fixture["cases"]:
        prompt, _ = prepare_prompt(tokenizer, case["messages"], case["thinking_budget"])
        result = run(recorder, tokenizer, case["messages"], budget=case["thinking_budget"],
                     max_new_tokens=case["max_new_tokens"])
        tokens = result.token_ids
        mismatch = next((i for i, (a, b) in enumerate(zip(tokens, case["token_ids"])) if a != b), None)
        if mismatch is None and len(tokens) != len(case["token_ids"]):
            mismatch = min(len(tokens), len(case["token_ids"]))
        rows = recorder.logits if mismatch is None else _teacher_forced(backend, case)
        case_diff, case_agreed = 0.0, 0
        for position, (row, step) in enumerate(zip(rows, case["steps"])):
            ids = step["top_ids"]
            diff = float(np.abs(row[ids].astype(np.float64) - np.asarray(step["top_logits"])).max())
            case_diff = max(case_diff, diff)
            if int(np.argmax(row)) == ids[0]:
                case_agreed += 1
            else:
                disagreements.append({"case": case["name"], "step": position, "reference_margin": step["margin"]})
        steps += len(case["steps"])
        agreed += case_agreed
        max_diff = max(max_diff, case_diff)
        records.append({"name": case["name"], "prompt": case["messages"][-1]["content"],
                        "thinking_budget": case["thinking_budget"], "prompt_matches": prompt == case["prompt_ids"],
                        "steps": len(case["steps"]), "greedy_match": mismatch is None, "first_mismatch": mismatch,
                        "top1_agreement": case_agreed / len(case["steps"]), "max_abs_logit_diff_top_k": case_diff})
    agreement = agreed / steps
    greedy = all(r["greedy_match"] for r in records)
    report = {"backend": backend.name, "reference": fixture["reference"], "cases": records, "steps": steps,
              "top_k": fixture["top_k"], "greedy_match": greedy, "top1_agreement": agreement,
              "max_abs_logit_diff_top_k": max_diff, "disagreements": disagreements,
              "max_disagreement_margin": max((d["reference_margin"] for d in disagreements), default=None)}
    if judged_by_agreement(manifest):
        near_ties = all(d["reference_margin"] <= NEAR_TIE_MARGIN for d in disagreements)
        report["criterion"] = (f"top1_agreement >= {ROUNDED_MIN_TOP1}, or every disagreement at a near tie "
                               f"(reference margin <= {NEAR_TIE_MARGIN})")
        report["passed"] = agreement >= ROUNDED_MIN_TOP1 or near_ties
    else:
        report["criterion"] = f"greedy_match and max_abs_logit_diff_top_k <= {EXACT_TOLERANCE}"
        report["passed"] = greedy and max_diff <= EXACT_TOLERANCE
    if not all(r["prompt_matches"] for r in records):  # the tokenizer or chat template no longer renders the same
        report["passed"] = False
    return report


def describe_failure(report: dict) -> str:
    """One line saying why a fixture check failed, with its numbers."""
    if not all(r["prompt_matches"] for r in report["cases"]):
        bad = [r["name"] for r in report["cases"] if not r["prompt_matches"]]
        return f"the chat template and tokenizer render the fixture's prompts differently ({', '.join(bad)})"
    return (f"the reference fixture fails ({report['criterion']}): greedy match {report['greedy_match']}, top-1 "
            f"agreement {report['top1_agreement']:.4f} over {report['steps']} steps, max |dlogit| on the top-"
            f"{report['top_k']} {report['max_abs_logit_diff_top_k']:.3g}, "
            f"{len(report['disagreements'])} disagreement(s), widest reference margin "
            f"{report['max_disagreement_margin']}")


def dumps(fixture: dict) -> bytes:
    return (json.dumps(fixture, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
