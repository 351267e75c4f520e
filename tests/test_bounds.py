"""Issue 32's bounds, each case reproduced: token ids past the embedding, memory as a whole, fp16 overflow and
non-finite weights, and values that used to crash or be misread (each was a crash, a traceback or a quiet misreading
on 26af75a)."""

import json
import pickle
import shutil

import numpy as np
import pytest

from runtimes.bundle import manifest_digest_line
from runtimes.checkpoint import resolve_model_dir
from runtimes.errors import UserError
from runtimes.files import sha256_file
from tests.conftest import ET_8DA4W, copy_checkpoint, edit_config, run_cli, run_module

ONNX_INT4 = ("--model", "tiny", "--target", "onnx", "--quant", "int4")
TINY = resolve_model_dir("tiny")


def one_line(err: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def resign(bundle, change=None, files=()):
    """Edit the manifest (change), record `files` as they now are, and sign it again: only content checks can
    catch what changed."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in files:
        manifest["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
    if change:
        change(manifest)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    (bundle / "manifest.sha256").write_text(manifest_digest_line(path.read_bytes()))


@pytest.fixture
def bundle(shared_export, tmp_path):
    """A copy of the tiny int4 onnx bundle to tamper with."""
    copy = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), copy)
    return copy


def map_token(tokenizer_json, token_id=50_000_000):
    data = json.loads(tokenizer_json.read_text())
    vocab = data["model"]["vocab"]
    name = next(k for k, v in vocab.items() if v == 60)
    vocab[name] = token_id
    tokenizer_json.write_text(json.dumps(data))


# ---- 1. token ids against the embedding's rows ---------------------------------------------------------------------

def test_a_tokenizer_id_past_the_embedding_fails_verify_and_every_command(bundle, capsys):
    map_token(bundle / "tokenizer.json")
    resign(bundle, files=["tokenizer.json"])
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 1 and "id 50000000, past the embedding's 382 rows" in out, out
    for argv in (["chat", "--bundle", str(bundle), "hi"], ["parity", "--bundle", str(bundle)],
                 ["bench", "--bundle", str(bundle), "--no-accuracy"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "past the embedding's 382 rows" in err, err
        one_line(err)


def test_special_and_generation_config_ids_past_the_embedding_fail_verify(bundle, capsys):
    (bundle / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 4000]}))
    resign(bundle, lambda m: m["special_tokens"].update(im_end=9999), files=["generation_config.json"])
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 1 and "special_tokens/im_end 9999 is past the embedding's 382 rows" in out, out


def test_a_checkpoint_whose_tokenizer_is_past_its_embedding_is_refused(tmp_path, capsys):
    model = copy_checkpoint(TINY, tmp_path / "m")
    map_token(model / "tokenizer.json", 400)
    code, _, err = run_cli(capsys, "chat", "--model", str(model), "hi")
    assert code == 2 and "id 400, past the embedding's 382 rows" in err, err
    code, _, err = run_cli(capsys, "--model", str(model), "--target", "onnx", "--quant", "fp32",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "past the embedding's 382 rows" in err and not (tmp_path / "o").exists(), err


def test_generate_never_feeds_an_id_past_the_backend(tiny_tokenizer):
    from runtimes.generate import run

    class Small:  # a backend whose embedding is smaller than the tokenizer's ids
        name, position, max_seq_len, vocab_size = "small", 0, 512, 10

        def reset(self):
            self.position = 0

        def prefill(self, ids):
            raise AssertionError(f"fed {ids}")

        decode = prefill

    with pytest.raises(UserError, match="past the model's 10 embedding rows"):
        run(Small(), tiny_tokenizer, [{"role": "user", "content": "What is 2 + 2?"}])


# ---- 4. memory as a whole ------------------------------------------------------------------------------------------

@pytest.fixture
def wide_checkpoint(tmp_path):
    """3 layers of 1024 KV heads of 1024 dimensions: small weights, a KV cache of GiBs per thousand positions."""
    model = copy_checkpoint(TINY, tmp_path / "wide")
    edit_config(model, num_hidden_layers=3, num_attention_heads=1024, num_key_value_heads=1024, head_dim=1024)
    return model


def test_a_kv_cache_beyond_the_memory_limit_is_refused_before_loading(wide_checkpoint, tmp_path, capsys):
    model = str(wide_checkpoint)
    for argv in (["chat", "--model", model, "hi"],
                 ["--model", model, "--target", "onnx", "--quant", "fp32", "--out", str(tmp_path / "o")],
                 ["parity", "--model", model]):
        code, _, err = run_cli(capsys, *argv, "--memory-limit", "8G")
        assert code == 2 and "KV cache at" in err and "more than the --memory-limit of 8.0 GiB" in err, err
        one_line(err)
    assert not (tmp_path / "o").exists()


def test_the_memory_check_uses_what_is_available(wide_checkpoint, monkeypatch):
    from runtimes import memory
    from runtimes.model import from_pretrained

    monkeypatch.setattr(memory, "available_memory", lambda: 4 << 30)
    memory.configure(None)
    with pytest.raises(UserError, match=r"KV cache at 512 positions 12\.0 GiB.*4\.0 GiB available here"):
        from_pretrained(wide_checkpoint, max_seq_len=512)


def test_the_memory_limit_covers_bundles_and_can_be_lifted(bundle, capsys):
    for argv in (["chat", "--bundle", str(bundle), "hi"], ["bench", "--bundle", str(bundle), "--no-accuracy"]):
        code, _, err = run_cli(capsys, *argv, "--memory-limit", "1M")
        assert code == 2 and "more than the --memory-limit of 1.0 MiB" in err, err
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--memory-limit", "1M")
    assert code == 1 and "needs" in out, out
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--memory-limit", "none")
    assert code == 0, out
    code, _, err = run_cli(capsys, "verify", "--bundle", str(bundle), "--memory-limit", "lots")
    assert code == 2 and "--memory-limit 'lots'" in err


# ---- 8. fp16 overflow and non-finite weights -----------------------------------------------------------------------

def test_a_weight_past_float16_is_refused_at_an_fp16_export(small_checkpoint, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = copy_checkpoint(small_checkpoint, tmp_path / "m")
    weights = load_file(model / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"][0, 0] = 3e38
    save_file(weights, model / "model.safetensors")
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "--model", str(model), "--target", "onnx", "--quant", "fp16", "--out", str(out))
    assert code == 2 and "layers.1.mlp.down_proj.weight holds 3e+38, beyond float16's range" in err, err
    one_line(err)
    assert not out.exists()


def test_verify_finds_a_nan_weight(bundle, capsys):
    import onnx

    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
                  and t.data_location == onnx.TensorProto.EXTERNAL)
    offset = int({e.key: e.value for e in tensor.external_data}.get("offset", 0))
    with open(bundle / "model.onnx.data", "r+b") as f:
        f.seek(offset)
        f.write(np.float32(np.nan).tobytes())
    resign(bundle, files=["model.onnx.data"])
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 1 and f"model.onnx: {tensor.name}" in out and "NaN or infinite" in out, out


def test_verify_reads_npy_and_safetensors_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    from runtimes.weights import bundle_nonfinite

    np.save(tmp_path / "a.npy", np.array([1.0, np.inf], np.float16))
    save_file({"w": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16), "ok": torch.ones(3)},
              tmp_path / "b.safetensors")
    problems, _ = bundle_nonfinite(tmp_path, ["a.npy", "b.safetensors"])
    assert problems == ["a.npy: its array holds NaN or infinite values",
                        "b.safetensors: w holds NaN or infinite values"]


# ---- 7. tracebacks where one line is promised ----------------------------------------------------------------------

def test_parity_model_never_unpickles_a_bin_beside_the_safetensors(tmp_path):
    model = copy_checkpoint(TINY, tmp_path / "m")
    (model / "model.safetensors").rename(model / "weights.safetensors")  # transformers would look for a .bin
    sentinel = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    (tmp_path / "prompts.txt").write_text("What is 2 + 2?\n")
    proc = run_module("parity", "--model", str(model), "--new-tokens", "2", "--prompts", str(tmp_path / "prompts.txt"))
    assert proc.returncode == 0 and "parity PASSED" in proc.stdout, proc.stderr
    assert not sentinel.exists()


def test_a_template_building_a_huge_string_is_refused(tmp_path, capsys):
    model = copy_checkpoint(TINY, tmp_path / "m")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ 'a'|center(20000000) }}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "chat", "--model", str(model), "hi")
    assert code == 2 and "passes 20000000 to a filter" in err, err
    one_line(err)


@pytest.mark.parametrize("key", ["temperature", "repetition_penalty"])
def test_subnormal_sampling_values_are_refused(tmp_path, capsys, key):
    model = copy_checkpoint(TINY, tmp_path / "m")
    (model / "generation_config.json").write_text(json.dumps({"do_sample": True, key: 1e-320}))
    code, _, err = run_cli(capsys, "chat", "--model", str(model), "hi")
    assert code == 2 and f"{key} is 1e-320; it must be a number at least" in err, err
    code, _, err = run_cli(capsys, "chat", "--temperature", "1e-308", "hi")
    assert code == 2 and "--temperature must be a finite number at least 0.001" in err, err


def test_a_manifest_claiming_more_context_than_the_onnx_graph_is_refused(bundle, capsys):
    def longer(m):
        old = m["max_seq_len"]
        m["max_seq_len"] = m["kv_cache"]["positions"] = 40960
        m["kv_cache"]["bytes_at_max_context"] = m["kv_cache"]["bytes_at_max_context"] // old * 40960

    resign(bundle, longer)
    code, _, err = run_cli(capsys, "chat", "--bundle", str(bundle), "one two three " * 300)
    assert code == 2 and "the manifest claims more context than the graph holds" in err, err
    one_line(err)


def test_a_manifest_claiming_more_context_than_the_executorch_program_is_refused(shared_export, tmp_path, capsys):
    bundle = tmp_path / "et"
    shutil.copytree(shared_export(*ET_8DA4W), bundle)

    def longer(m):
        old = m["max_seq_len"]
        m["max_seq_len"] = m["kv_cache"]["positions"] = 4096
        m["kv_cache"]["bytes_at_max_context"] = m["kv_cache"]["bytes_at_max_context"] // old * 4096

    resign(bundle, longer)
    code, _, err = run_cli(capsys, "chat", "--bundle", str(bundle), "hi")
    assert code == 2 and "holds a context of 256 positions, and its manifest claims max_seq_len 4096" in err, err


def test_a_tokenizer_regex_past_onigurumas_retry_limit_is_one_line(tmp_path):
    model = copy_checkpoint(TINY, tmp_path / "m")
    data = json.loads((model / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "((a+)+)+z"
    (model / "tokenizer.json").write_text(json.dumps(data))
    proc = run_module("chat", "--model", str(model), "a" * 40)
    assert proc.returncode == 2 and "the tokenizer fails on this text" in proc.stderr, proc.stderr
    one_line(proc.stderr)


def test_make_model_seed_past_64_bits(capsys, tmp_path):
    code, _, err = run_cli(capsys, "make-model", "--shape", "0.6b", "--seed", "99999999999999999999999",
                           "--out", str(tmp_path / "m"))
    assert code == 2 and "--seed must be a whole number from 0 to 2**64 - 1" in err, err


# ---- 10. quiet misreadings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, phrase", [
    (["--model", "tiny", "--target", "onnx", "--max-seq-len", "0", "--out", "OUT"], "--max-seq-len must be between 16"),
    (["chat", "--bundle", "BUNDLE", "--max-seq-len", "64", "hi"], "a bundle's context is fixed"),
    (["bench", "--bundle", "BUNDLE", "--threads", "-1"], "--threads must be 1 or more"),
    *[(["parity", "--bundle", "BUNDLE", "--tolerance", value], "--tolerance must be a finite number above 0")
      for value in ("nan", "-1", "inf", "0")],
])
def test_values_that_were_misread(bundle, tmp_path, capsys, argv, phrase):
    places = {"OUT": str(tmp_path / "o"), "BUNDLE": str(bundle)}
    code, _, err = run_cli(capsys, *[places.get(a, a) for a in argv])
    assert code == 2 and phrase in err, err
    one_line(err)
    assert not (tmp_path / "o").exists()


def test_min_p_one_fails_verify_as_it_fails_chat(bundle, capsys):
    (bundle / "generation_config.json").write_text(json.dumps({"do_sample": True, "min_p": 1}))
    resign(bundle, files=["generation_config.json"])
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--no-run")
    assert code == 1 and "min_p is 1; it must be a number at least 0 and below 1" in out, out


def test_executorch_says_nothing_on_stderr_without_verbose(shared_export):
    proc = run_module("chat", "--bundle", str(shared_export(*ET_8DA4W)), "--no-think", "--max-new-tokens", "2", "hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().startswith("[0 reasoning tokens") and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


def test_tokenizing_in_many_threads_keeps_stderr(tiny_tokenizer):
    """encode hides what the tokenizers library writes to file descriptor 2 (a panic's report); serve tokenizes in
    worker threads, and swaps of fd 2 and sys.stderr that interleaved left a closed sys.stderr behind (the process
    then lost its error output)."""
    import sys
    import threading

    before = sys.stderr
    failures = []

    def work():
        try:
            for _ in range(200):
                tiny_tokenizer.encode("What is 12 + 30?")
        except Exception as exc:  # noqa: BLE001 — any failure in a thread is the finding
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and sys.stderr is before and not sys.stderr.closed
