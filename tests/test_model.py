"""The edge module against transformers' Qwen3ForCausalLM on random checkpoints of several shapes."""

import json

import numpy as np
import pytest
import torch

from exporter.make_model import write_random_checkpoint
from runtimes.model import from_pretrained
from runtimes.backends.reference import ReferenceBackend
from runtimes.eval.parity import logit_metrics, model_parity, summarize
from tests.conftest import SMALL, run_module

SHAPE_CASES = {
    "tied_fp32": (SMALL, "float32", 2 << 30),
    "untied_head": ({**SMALL, "tie_word_embeddings": False}, "float32", 2 << 30),
    # head_dim 48 while hidden/heads = 16: q_proj widens, o_proj narrows back
    "head_dim_not_hidden_over_heads": ({**SMALL, "head_dim": 48}, "float16", 2 << 30),
    "bf16_sharded": ({**SMALL, "num_hidden_layers": 3}, "bfloat16", 64 << 10),
    "mha_no_gqa": ({**SMALL, "num_key_value_heads": 4}, "float32", 2 << 30),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_parity_against_transformers(case, tmp_path):
    config, dtype, shard_bytes = SHAPE_CASES[case]
    model_dir = write_random_checkpoint(tmp_path / case, config, seed=3, dtype=dtype, shard_bytes=shard_bytes)
    if case == "bf16_sharded":
        assert len(list(model_dir.glob("model-*-of-*.safetensors"))) > 1
    report = model_parity(str(model_dir), new_tokens=32, progress=False)
    assert report["prompt_source"] == "random_token_ids"
    assert report["greedy_token_match"] == 1.0
    assert report["max_abs_logit_diff"] <= 1e-3
    assert report["teacher_forced_top1_agreement"] == 1.0
    assert report["kv_cache_max_abs_diff"] <= 1e-3
    assert report["mean_kl"] < 1e-8
    assert report["passed"] is True


@pytest.mark.slow
def test_exact_qwen3_0_6b_shape_via_cli(tmp_path):
    """The published 0.6B config (vocab 151936, head_dim 128, GQA 16/8) with 2 layers, bf16, end to end."""
    model_dir = tmp_path / "q06"
    made = run_module("make-model", "--shape", "0.6b", "--layers", "2", "--out", str(model_dir))
    assert made.returncode == 0, made.stderr
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["hidden_size"], config["vocab_size"], config["head_dim"]) == (1024, 151936, 128)
    report_path = tmp_path / "parity.json"
    result = run_module("parity", "--model", str(model_dir), "--json", str(report_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    for field in ("prompts", "greedy_token_match", "teacher_forced_top1_agreement", "max_abs_logit_diff",
                  "mean_kl", "passed"):
        assert field in report
    assert report["greedy_token_match"] == 1.0 and report["max_abs_logit_diff"] <= 1e-3
    assert all(p["new_tokens"] >= 32 for p in report["prompts"])


def test_disagreements_carry_the_references_margin():
    reference = np.array([[3.0, 2.995, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    ours = np.array([[2.99, 3.0, 0.0], [1.0, 5.0, 0.0], [0.0, 0.0, 9.1]])
    m = logit_metrics(ours, reference)
    assert m["top1_agreement"] == 1 / 3
    assert [d["position"] for d in m["disagreements"]] == [0, 1]
    assert [round(d["reference_margin"], 6) for d in m["disagreements"]] == [0.005, 4.0]
    report = summarize([{"greedy_match": True, "teacher_forced": m},
                        {"greedy_match": True, "teacher_forced": logit_metrics(reference, reference)}])
    assert report["top1_disagreements"] == 2 and report["max_disagreement_margin"] == 4.0
    assert report["teacher_forced_top1_agreement"] == 4 / 6


def test_kv_cache_decode_equals_full_recompute(small_checkpoint):
    module, _ = from_pretrained(small_checkpoint, max_seq_len=64)
    backend = ReferenceBackend(module)
    ids = np.random.default_rng(0).integers(0, SMALL["vocab_size"], 40).tolist()
    full = backend.prefill(ids, all_logits=True)
    backend.reset()
    # a chunked prefill at a non-zero start, then one-token decodes
    backend.prefill(ids[:10])
    chunk = backend.prefill(ids[10:25], all_logits=True)
    steps = [backend.decode(t) for t in ids[25:]]
    assert backend.position == 40
    np.testing.assert_allclose(chunk, full[10:25], atol=1e-5)
    np.testing.assert_allclose(np.stack(steps), full[25:], atol=1e-5)


def test_parity_detects_a_wrong_model(small_checkpoint, monkeypatch):
    """Parity must fail when the module is wrong: break RoPE's theta and check the report says so."""
    import runtimes.model as model_module

    real = model_module.rope_tables
    monkeypatch.setattr(model_module, "rope_tables", lambda d, n, theta, *scaling: real(d, n, theta * 10, *scaling))
    report = model_parity(str(small_checkpoint), new_tokens=8, progress=False)
    assert report["passed"] is False
    assert report["max_abs_logit_diff"] > 1e-3


def test_loads_half_precision_weights_into_fp32(tmp_path):
    model_dir = write_random_checkpoint(tmp_path / "bf16", SMALL, seed=5, dtype="bfloat16")
    module, config = from_pretrained(model_dir, max_seq_len=16)
    assert module.embed_tokens.weight.dtype == torch.float32
    assert config["torch_dtype"] == "bfloat16"
    assert module.lm_head.weight.data_ptr() == module.embed_tokens.weight.data_ptr()  # tied


def test_context_overflow_is_a_user_error(small_checkpoint):
    from runtimes.errors import UserError

    module, _ = from_pretrained(small_checkpoint, max_seq_len=8)
    backend = ReferenceBackend(module)
    backend.prefill([1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(UserError, match="exceed the context of 8"):
        backend.decode(1)
