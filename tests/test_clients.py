"""Bundles run unchanged in the stock clients apps use: ONNX Runtime GenAI for ONNX bundles, ExecuTorch's
TextLLMRunner for .pte bundles, each in a process that loaded nothing of ours first."""

import json
import subprocess
import sys

import pytest

from exporter.targets.onnx_cpu import FLOAT_ATTENTION_MIN_TOKENS
from runtimes.bundle import load_backend, read_manifest
from runtimes.generate import prepare_prompt, run
from runtimes.tokenizer import QwenTokenizer
from tests.conftest import ET_8DA4W

# the last is long enough for the int8-cache graph's float prompt path (exporter/targets/onnx_cpu.py)
PROMPTS = ("What is 47 + 385?", "What is 4821 - 9377?", "What is 306 * 7?", "What is 95 + 8? /no_think",
           "Add 47 and 385, then subtract 9377 from the sum, and say what the result is.")

GENAI = """
import json, sys
import onnxruntime_genai as og
bundle, max_length, prompts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
model = og.Model(bundle)
out = []
for ids in prompts:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length or len(ids) + 48, do_sample=False)
    try:
        generator = og.Generator(model, params)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(0)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    out.append(tokens)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    from exporter.cli import main

    out = tmp_path_factory.mktemp("clients") / "tiny-onnx"
    assert main(["--model", "tiny", "--target", "onnx", "--out", str(out)]) == 0  # the default recipe
    return out


def genai(bundle, prompts, max_length=0):
    proc = subprocess.run([sys.executable, "-c", GENAI, str(bundle), str(max_length), json.dumps(prompts)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_genai_generates_our_greedy_tokens(bundle):
    tokenizer = QwenTokenizer(bundle)
    backend = load_backend(bundle)
    prompts, ours = [], []
    for text in PROMPTS:
        messages = [{"role": "user", "content": text}]
        ids, _ = prepare_prompt(tokenizer, messages, None)
        result = run(backend, tokenizer, messages, budget=None, max_new_tokens=48 - 1)
        prompts.append(ids)
        ours.append(result.token_ids)
    assert max(map(len, prompts)) >= FLOAT_ATTENTION_MIN_TOKENS
    theirs = genai(bundle, prompts)
    for mine, other in zip(ours, theirs):
        assert other[:len(mine)] == mine  # GenAI stops at the same <|im_end|>, or runs to its max_length


def test_ort_genai_generates_our_greedy_tokens(onnx_bundle):
    """The bundle's genai_config.json is all ORT-GenAI needs: the same greedy tokens as our runtime, from the same
    prompt ids (an app renders the chat template itself: GenAI cannot switch Qwen3's thinking)."""
    assert read_manifest(onnx_bundle)["kv_cache"]["dtype"] == "int8"
    assert_genai_generates_our_greedy_tokens(onnx_bundle)


def test_ort_genai_runs_a_float32_kv_cache_bundle(tmp_path):
    """The default bundle above has an int8 cache (its scales are constants of the graph: GenAI allocates int8
    buffers from the graph's inputs); one with --kv-cache float32 runs unchanged too."""
    from exporter.cli import main

    bundle = tmp_path / "kv32"
    assert main(["--model", "tiny", "--target", "onnx", "--kv-cache", "float32", "--out", str(bundle)]) == 0
    assert_genai_generates_our_greedy_tokens(bundle)


def test_ort_genai_refuses_a_length_past_the_bundle_clearly(onnx_bundle):
    context = json.loads((onnx_bundle / "manifest.json").read_text())["max_seq_len"]
    result = genai(onnx_bundle, [[1, 2, 3]], max_length=context + 8)
    assert f"cannot be greater than model context_length ({context})" in result["error"]


STOCK_RUNNER = """
import sys
from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
{imports}
pieces = []
runner = TextLLMRunner(sys.argv[1] + "/model.pte", sys.argv[1] + "/tokenizer.json")
runner.generate(sys.argv[2], GenerationConfig(echo=False, max_new_tokens=12, temperature=0.0),
                token_callback=pieces.append)
print("".join(pieces))
"""
# what an app's ExecuTorch build links beside XNNPACK: the LLM custom ops and the quantized kernels, and for the
# default int8 cache our kernels (runtimes/kernels/kv8_attention.cpp, a native library: nothing of ours in Python)
KERNELS = "import executorch.extension.llm.custom_ops.custom_ops, executorch.kernels.quantized"
OUR_KERNELS = "import ctypes; ctypes.CDLL({path!r}, mode=ctypes.RTLD_GLOBAL)"


@pytest.mark.slow
def test_executorchs_stock_runner_runs_a_bundle_in_a_fresh_process(tmp_path, shared_export):
    """In a process that imported nothing of ours: with ExecuTorch's two kernel libraries and ours registered it
    generates our greedy tokens; without ours, or without them, it cannot run the program (docs/executorch.md says
    which libraries an app must link)."""
    from runtimes.backends.executorch_kernels import library_path
    from runtimes.chat import render

    bundle = shared_export(*ET_8DA4W)
    messages = [{"role": "user", "content": "What is 47 + 385?"}]
    prompt = render(messages, enable_thinking=False)
    tokenizer = QwenTokenizer(bundle)
    ours = run(load_backend(bundle), tokenizer, messages, budget=None, enable_thinking=False, max_new_tokens=12)

    def stock(imports):
        return subprocess.run([sys.executable, "-c", STOCK_RUNNER.format(imports=imports), str(bundle), prompt],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)

    linked = stock(KERNELS + "\n" + OUR_KERNELS.format(path=str(library_path())))
    assert linked.returncode == 0, linked.stderr
    assert linked.stdout.startswith(tokenizer.decode(ours.token_ids[:8]))
    for missing, imports in (("ours", KERNELS), ("all", "")):
        bare = stock(imports)
        assert bare.returncode != 0 and ("not found" in bare.stderr or "Missing operator" in bare.stderr), \
            (missing, bare.stderr)
