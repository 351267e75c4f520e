"""YaRN RoPE scaling: the parameters as transformers reads them, the module against transformers' Qwen3ForCausalLM past
original_max_position_embeddings, and every target's bundle against the module there. A small shape with a short
original context (64, factor 4, 256 positions) makes those positions cheap."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter.make_model import write_random_checkpoint
from runtimes.checkpoint import resolve_model_dir
from runtimes.errors import UserError
from runtimes.eval.parity import bundle_parity
from runtimes.model import ModelArgs, from_pretrained, rope_tables
from runtimes.rope import Yarn, rope_tables as host_rope_tables, yarn_from_config
from tests.conftest import SMALL, run_module

ORIGINAL, FACTOR, CONTEXT = 64, 4.0, 256
YARN = {"rope_type": "yarn", "factor": FACTOR, "original_max_position_embeddings": ORIGINAL}
# head_dim 32 and theta 1e4 put YaRN's blend over several frequencies (with 16 and 1e6 it would cover one)
CONFIG = {**SMALL, "vocab_size": 382, "head_dim": 32, "rope_theta": 10000.0, "max_position_embeddings": CONTEXT,
          "rope_scaling": YARN}
POSITIONS = 200
# Qwen3's model card: the block to add to config.json for 131,072 tokens
QWEN3_CARD = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


@pytest.fixture(scope="module")
def yarn_checkpoint(tmp_path_factory) -> Path:
    """A random checkpoint with YaRN and the tiny model's tokenizer (its vocabulary is 382), so it exports."""
    out = write_random_checkpoint(tmp_path_factory.mktemp("yarn") / "m", CONFIG, seed=5, dtype="float32")
    tiny = resolve_model_dir("tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (out / name).write_bytes((tiny / name).read_bytes())
    return out


def hf_config(rope: dict, **extra):
    from transformers import Qwen3Config

    values = {**SMALL, "head_dim": 32, "rope_theta": 10000.0, "max_position_embeddings": CONTEXT, **extra}
    return Qwen3Config(**{k: v for k, v in values.items() if k not in ("rope_scaling", "torch_dtype")},
                       rope_scaling=rope)


@pytest.mark.parametrize("rope", [
    YARN,
    {**YARN, "beta_fast": 16, "beta_slow": 2},
    {**YARN, "truncate": False},
    {**YARN, "attention_factor": 1.3},
    {**YARN, "factor": 8.0, "mscale": 1.0, "mscale_all_dim": 0.5},
    {**QWEN3_CARD},
    {"rope_type": "yarn", "factor": 2.0},  # the original context taken from max_position_embeddings
])
def test_frequencies_and_attention_factor_match_transformers(rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = hf_config(rope)
    inv_freq, attention = ROPE_INIT_FUNCTIONS["yarn"](config)
    yarn = yarn_from_config({"rope_scaling": rope, "max_position_embeddings": CONTEXT})
    assert yarn.attention_factor == pytest.approx(attention, rel=1e-12)
    cos, sin = rope_tables(32, CONTEXT, 10000.0, yarn)
    angles = torch.outer(torch.arange(CONTEXT, dtype=torch.float32), inv_freq.float())
    assert torch.allclose(cos[:, :16], angles.cos() * attention, atol=1e-5)
    assert torch.allclose(sin[:, 16:], angles.sin() * attention, atol=1e-5)
    # the tables the npu profile's host computes: the same, in numpy
    host_cos, host_sin = host_rope_tables(32, CONTEXT, 10000.0, yarn)
    assert np.abs(host_cos - cos[:, :16].numpy()).max() < 1e-5 and np.abs(host_sin - sin[:, :16].numpy()).max() < 1e-5


def test_qwen3_cards_block_reaches_131072_positions():
    yarn = yarn_from_config({"rope_scaling": QWEN3_CARD})
    assert yarn == Yarn(4.0, 32768, 32.0, 1.0, 0.1 * math.log(4.0) + 1.0, True)
    qwen3 = json.loads((resolve_model_dir("tiny") / "config.json").read_text())
    args = ModelArgs.from_config({**qwen3, "max_position_embeddings": 40960, "rope_scaling": QWEN3_CARD})
    assert args.context_limit == 131072 and ModelArgs.from_config(qwen3).context_limit == 512
    # as transformers standardizes: the original context from the config's top level first, else max_position_embeddings
    assert yarn_from_config({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}, "max_position_embeddings": 400,
                             "original_max_position_embeddings": 100}).original_max_position_embeddings == 100
    assert yarn_from_config({"rope_scaling": {"rope_type": "yarn", "factor": 2.0},
                             "max_position_embeddings": 400}).original_max_position_embeddings == 400
    # transformers 5 keeps it under rope_parameters, rope_theta included
    args = ModelArgs.from_config({**qwen3, "rope_parameters": {**QWEN3_CARD, "rope_theta": 1e6}})
    assert args.rope_scaling.factor == 4.0 and args.rope_theta == 1e6


@pytest.mark.parametrize("rope, message", [
    ({"rope_type": "linear", "factor": 2.0}, "RoPE scaling 'linear'; supported are default RoPE and 'yarn'"),
    ({"type": "dynamic", "factor": 2.0}, "RoPE scaling 'dynamic'"),
    ({"rope_type": "yarn", "original_max_position_embeddings": 64}, "rope_scaling factor is None"),
    ({**YARN, "factor": 0.5}, "rope_scaling factor is 0.5"),
    ({**YARN, "original_max_position_embeddings": 64.5}, "original_max_position_embeddings is 64.5"),
    ({**YARN, "beta_fast": 1, "beta_slow": 2}, "beta_slow (2) must be below beta_fast (1)"),
    ({**YARN, "truncate": "yes"}, "truncate is 'yes'"),
])
def test_other_scalings_and_bad_parameters_are_one_clear_error(rope, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        yarn_from_config({"rope_scaling": rope})


def test_module_matches_transformers_past_the_original_context(yarn_checkpoint):
    from transformers import Qwen3ForCausalLM

    ids = torch.randint(0, CONFIG["vocab_size"], (POSITIONS,), generator=torch.Generator().manual_seed(0))
    hf = Qwen3ForCausalLM.from_pretrained(yarn_checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
    module, _ = from_pretrained(str(yarn_checkpoint), max_seq_len=CONTEXT)
    with torch.no_grad():
        expected = hf(ids[None]).logits[0]
        prefill = module.prefill(ids[:150], 0)[0]
        steps = [module.decode(int(t), 150 + i) for i, t in enumerate(ids[150:].tolist())]
        got = torch.cat([prefill, torch.stack(steps)])
    past = slice(ORIGINAL, POSITIONS)
    assert (got[past] - expected[past]).abs().max() <= 1e-4  # fp32 on both sides: rounding only
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    # the scaling matters there: default RoPE on the same weights is far off
    plain = ModelArgs.from_config({**CONFIG, "rope_scaling": None})
    module.args = plain
    module.setup_caches(CONTEXT, torch.float32)
    with torch.no_grad():
        unscaled = module.prefill(ids, 0)[0]
    assert (unscaled[past] - expected[past]).abs().max() > 100 * 1e-4


def test_context_beyond_the_models_limit_is_refused(yarn_checkpoint):
    with pytest.raises(UserError, match="max_position_embeddings, 256"):
        from_pretrained(str(yarn_checkpoint), max_seq_len=CONTEXT + 1)


def long_prompts(tmp_path: Path) -> str:
    """Prompts that run past the original context (the tiny tokenizer spends a token per digit or so)."""
    path = tmp_path / "prompts.txt"
    path.write_text(" ".join(f"What is {i} + {2 * i + 7}?" for i in range(14)) + "\n")
    return str(path)


def export_and_check(yarn_checkpoint, tmp_path, *flags) -> dict:
    out = tmp_path / "bundle"
    proc = run_module("--model", str(yarn_checkpoint), *flags, "--max-seq-len", str(CONTEXT), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"]["rope_scaling"] == {**yarn_from_config(CONFIG).manifest()}
    report = bundle_parity(str(out), long_prompts(tmp_path), new_tokens=16, thinking_budget=8, progress=False)
    assert all(ORIGINAL + 32 < p["prompt_tokens"] < CONTEXT - 24 for p in report["prompts"])
    assert report["passed"], report
    return report


def test_onnx_cpu_bundle_past_the_original_context(yarn_checkpoint, tmp_path):
    report = export_and_check(yarn_checkpoint, tmp_path, "--target", "onnx", "--quant", "fp32")
    assert report["criterion"].startswith("greedy_token_match == 1")  # exact: the logit bound applies


@pytest.mark.slow
def test_onnx_npu_bundle_past_the_original_context(yarn_checkpoint, tmp_path):
    export_and_check(yarn_checkpoint, tmp_path, "--target", "onnx", "--profile", "npu", "--quant", "int4")


@pytest.mark.slow
def test_executorch_bundle_past_the_original_context(yarn_checkpoint, tmp_path):
    export_and_check(yarn_checkpoint, tmp_path, "--target", "executorch", "--quant", "fp32")


@pytest.mark.slow
def test_coreml_converted_modules_past_the_original_context(yarn_checkpoint):
    """Core ML cannot run here: the modules it converts, run in PyTorch and chained as the backend chains them."""
    from tests.test_coreml import TorchChain

    module, _ = from_pretrained(str(yarn_checkpoint), max_seq_len=CONTEXT)
    chain = TorchChain(module, {}, CONTEXT, 1 << 30)
    ids = torch.randint(0, CONFIG["vocab_size"], (POSITIONS,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module.prefill(ids, 0)[0]
    got = torch.cat([chain.feed(ids[:150].tolist())] + [chain.feed([t]) for t in ids[150:].tolist()])
    past = slice(ORIGINAL, POSITIONS)
    assert (got[past].argmax(-1) == expected[past].argmax(-1)).float().mean() >= 0.99
    assert (got[past] - expected[past]).abs().max() < 0.05  # fp16 caches, hidden states and logits, as test_coreml
