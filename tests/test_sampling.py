"""Sampling as Qwen3 needs it: the portable seeded sampler (one golden file for Python, Java and Swift), the
per-mode defaults, the mode actually in effect, and presence penalty over generated tokens only."""

import json

import numpy as np
import pytest

from exporter.make_model import QWEN3_GENERATION_CONFIG
from runtimes.errors import UserError
from runtimes.generate import thinking_mode
from runtimes.sampling import QWEN3_NON_THINKING, QWEN3_THINKING, Sampler, SamplingParams, SplitMix64
from tests.conftest import ROOT, copy_checkpoint, run_cli
from tools.golden import sampling_vectors

GOLDEN = ROOT / "tests" / "golden" / "sampling.json"


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def params_from(fields: dict) -> SamplingParams:
    return SamplingParams(**{**fields, "seed": None if fields["seed"] is None else int(fields["seed"], 16)})


def test_the_golden_file_is_what_the_runtime_writes():
    assert json.loads(json.dumps(sampling_vectors())) == golden(), \
        "regenerate it: python -m tools.golden --out tests/golden/tiny.json --sampling-out tests/golden/sampling.json"


def test_golden_decisions_replay():
    data = golden()
    assert len(data["cases"]) >= 8
    for case in data["cases"]:
        sampler = Sampler(params_from(case["params"]))
        generated = []
        for logits in case["logits"]:
            generated.append(sampler(np.array(logits, dtype=np.float32), generated, case["prompt_ids"]))
        assert generated == case["chosen"], case["name"]
    # the cases exercise what they are named for: a sampled case differs from greedy, a penalised one from unpenalised
    by_name = {case["name"]: case for case in data["cases"]}
    thinking = by_name["qwen3 thinking defaults"]
    assert thinking["chosen"] != [int(np.argmax(step)) for step in thinking["logits"]]
    penalised = by_name["repetition and presence penalties"]
    plain = Sampler(SamplingParams(**{**params_from(penalised["params"]).__dict__, "repetition_penalty": 1.0,
                                      "presence_penalty": 0.0}))
    unpenalised = []
    for logits in penalised["logits"]:
        unpenalised.append(plain(np.array(logits, dtype=np.float32), unpenalised, penalised["prompt_ids"]))
    assert unpenalised != penalised["chosen"]


def test_splitmix64_matches_its_reference_outputs():
    # SplitMix64 from state 0: the first outputs of the reference C implementation (Vigna's splitmix64.c)
    generator = SplitMix64(0)
    assert [generator.next_u64() for _ in range(2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    for entry in golden()["splitmix64"]:
        generator = SplitMix64(int(entry["seed"], 16))
        assert [f"{generator.next_u64():016x}" for _ in entry["next_u64"]] == entry["next_u64"]
        draws = SplitMix64(int(entry["seed"], 16))
        assert [draws.next_float() for _ in entry["next_float"]] == entry["next_float"]
        assert all(0 <= value < 1 for value in entry["next_float"])


def test_defaults_by_mode():
    assert SamplingParams.for_mode({}, thinking=True) == SamplingParams(**QWEN3_THINKING)
    assert SamplingParams.for_mode({}, thinking=False) == SamplingParams(**QWEN3_NON_THINKING)
    assert SamplingParams.for_mode(QWEN3_GENERATION_CONFIG, thinking=False) == SamplingParams(temperature=0.7,
                                                                                               top_p=0.8, top_k=20)
    custom = {"do_sample": True, "temperature": 0.3, "presence_penalty": 1.5}
    assert SamplingParams.for_mode(custom, thinking=True) == SamplingParams(temperature=0.3, top_p=0.95, top_k=20,
                                                                            presence_penalty=1.5)
    assert SamplingParams.for_mode({"do_sample": False}, thinking=True).temperature == 0  # greedy on request
    for case in golden()["defaults"]:
        got = SamplingParams.for_mode(case["generation_config"], case["thinking"])
        assert got == params_from(case["params"]), case["name"]


@pytest.mark.parametrize("text, budget, enable_thinking, expected", [
    ("plain", None, True, True),
    ("plain /no_think", None, True, False),
    ("plain", 0, True, False),
    ("/think please", None, False, False),  # the hard switch beats the soft one, as in Qwen's template
    ("/think please", 0, True, False),
    ("/no_think then /think", 16, True, True),
])
def test_the_mode_in_effect(text, budget, enable_thinking, expected):
    assert thinking_mode([{"role": "user", "content": text}], budget, enable_thinking) is expected


def test_presence_penalty_counts_generated_tokens_only():
    logits = np.array([0.0, 3.0, 2.0, 1.0], dtype=np.float32)
    greedy = Sampler(SamplingParams(presence_penalty=2.0))
    assert greedy(logits, generated=[], prompt=[1]) == 1  # in the prompt only: not penalised
    assert greedy(logits, generated=[1], prompt=[]) == 2  # 3 - 2 < 2
    assert greedy(logits, generated=[1, 1, 1], prompt=[]) == 2  # presence, not frequency: 3 - 2 once
    with pytest.raises(UserError, match="presence-penalty must be a finite number at least -2 and at most 2"):
        SamplingParams(presence_penalty=2.5)


def test_a_seed_reproduces_and_no_seed_draws_one():
    logits = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    a, b = Sampler(SamplingParams(temperature=1.0, seed=9)), Sampler(SamplingParams(temperature=1.0, seed=9))
    assert [a(logits, []) for _ in range(30)] == [b(logits, []) for _ in range(30)]
    seeds = {Sampler(SamplingParams(temperature=1.0)).seed for _ in range(4)}
    assert len(seeds) == 4 and all(0 <= seed < 2 ** 64 for seed in seeds)


def sampling_model(tmp_path):
    from runtimes.checkpoint import resolve_model_dir

    model_dir = copy_checkpoint(resolve_model_dir("tiny"), tmp_path / "m")
    sampling = {k: v for k, v in QWEN3_GENERATION_CONFIG.items() if not k.endswith("token_id")}  # tiny's ids stay
    own = model_dir / "generation_config.json"
    config = json.loads(own.read_text()) if own.is_file() else {}
    own.write_text(json.dumps({**config, **sampling}))
    return model_dir


@pytest.mark.parametrize("flags, prompt, expected", [
    ([], "What is 3 + 4?", QWEN3_THINKING),
    (["--no-think"], "What is 3 + 4?", QWEN3_NON_THINKING),
    ([], "What is 3 + 4? /no_think", QWEN3_NON_THINKING),
    (["--thinking-budget", "0"], "What is 3 + 4? /think", QWEN3_NON_THINKING),
])
def test_chat_samples_by_the_mode_in_effect_and_reports_it(capsys, tmp_path, flags, prompt, expected):
    model = sampling_model(tmp_path)
    code, out, err = run_cli(capsys, "chat", "--model", str(model), "--json", "-", "--max-new-tokens", "2",
                             "--max-seq-len", "64", "--seed", "5", *flags, prompt)
    assert code == 0, err
    result = json.loads(out)
    assert result["thinking"] is (expected is QWEN3_THINKING)
    assert {key: result["sampling"][key] for key in expected} == expected
    assert result["sampling"]["seed"] == 5 and result["sampling"]["presence_penalty"] == 0


def test_chat_presence_penalty_and_seed(capsys, tmp_path):
    model = sampling_model(tmp_path)
    argv = ["chat", "--model", str(model), "--json", "-", "--max-new-tokens", "8", "--max-seq-len", "64",
            "--thinking-budget", "8", "--presence-penalty", "1.5", "What is 3 + 4?"]
    runs = []
    for seed in ("11", "11"):
        code, out, err = run_cli(capsys, *argv, "--seed", seed)
        assert code == 0, err
        runs.append(json.loads(out))
    assert runs[0]["sampling"]["presence_penalty"] == 1.5
    assert runs[0]["reasoning"] == runs[1]["reasoning"] and runs[0]["content"] == runs[1]["content"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and 0 <= json.loads(out)["sampling"]["seed"] < 2 ** 64  # a drawn seed, reported
    code, _, err = run_cli(capsys, *argv, "--presence-penalty", "3")
    assert code == 2 and err.strip().count("\n") == 0 and "presence-penalty must be a finite number at least -2 and at most 2" in err
