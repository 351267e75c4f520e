"""Every bad input gets one line on stderr that says what to do, and exit code 2; never a traceback."""


import pytest
from safetensors.torch import save_file
import torch

from exporter.cli import parse
from exporter.make_model import write_random_checkpoint
from tests.conftest import SMALL, copy_checkpoint, edit_config, run_cli, run_module


def assert_user_error(code, err, *phrases):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_unknown_flag(capsys):
    assert_user_error(*run_cli(capsys, "--target", "onnx", "--out", "x", "--bogus")[::2], "unrecognized arguments: --bogus")


def test_unknown_flag_on_subcommand(capsys):
    assert_user_error(*run_cli(capsys, "parity", "--model", "tiny", "--frobnicate")[::2], "--frobnicate")


def test_missing_model_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "parity", "--model", str(tmp_path / "nope"))
    assert_user_error(code, err, "does not exist", "Qwen3 checkpoint directory")


def test_model_path_is_a_file(capsys, tmp_path):
    f = tmp_path / "model.bin"
    f.write_text("x")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(f))[::2], "is a file")


def test_dir_without_config(capsys, tmp_path):
    assert_user_error(*run_cli(capsys, "parity", "--model", str(tmp_path))[::2], "no config.json")


@pytest.mark.parametrize("changes, phrase", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "is not a Qwen3 checkpoint"),
    ({"architectures": ["Qwen3MoeForCausalLM"]}, "is not a Qwen3 checkpoint"),
    ({"torch_dtype": "float8_e4m3fn"}, "supported are float32, float16 and bfloat16"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, "RoPE scaling 'linear'; supported are default RoPE and"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 0.5}}, "rope_scaling factor is 0.5"),
    ({"use_sliding_window": True}, "sliding-window"),
])
def test_config_not_supported(capsys, tmp_path, small_checkpoint, changes, phrase):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    edit_config(model_dir, **changes)
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], phrase)


def test_config_not_json(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (model_dir / "config.json").write_text("{not json")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "not valid JSON")


def test_truncated_safetensors(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "corrupt or truncated",
                      "download the file again")


def test_corrupt_safetensors(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (model_dir / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "corrupt or truncated")


def test_missing_shard(capsys, tmp_path):
    model_dir = write_random_checkpoint(tmp_path / "sharded", SMALL, dtype="bfloat16", shard_bytes=64 << 10)
    shards = sorted(model_dir.glob("model-*.safetensors"))
    shards[1].unlink()
    code, _, err = run_cli(capsys, "parity", "--model", str(model_dir))
    assert_user_error(code, err, f"missing 1 of {len(shards)} shards", shards[1].name, "complete checkpoint")


def test_no_weights(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (model_dir / "model.safetensors").unlink()
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "no model.safetensors")


def test_unsupported_tensor_dtype(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    from safetensors.torch import load_file

    weights = load_file(model_dir / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"].to(torch.int8)
    save_file(weights, model_dir / "model.safetensors")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "model.norm.weight is I8",
                      "supported are F32, F16 and BF16")


def test_weights_do_not_match_config(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    edit_config(model_dir, num_hidden_layers=3)
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "lacks", "layers.2")
    edit_config(model_dir, num_hidden_layers=2, intermediate_size=128)
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "has shape")


def test_untied_config_without_lm_head(capsys, tmp_path, small_checkpoint):
    model_dir = copy_checkpoint(small_checkpoint, tmp_path / "m")
    edit_config(model_dir, tie_word_embeddings=False)
    assert_user_error(*run_cli(capsys, "parity", "--model", str(model_dir))[::2], "lm_head.weight")


def test_hub_id_offline(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    code, _, err = run_cli(capsys, "parity", "--model", "Qwen/Qwen3-0.6B")
    assert_user_error(code, err, "cannot download Qwen/Qwen3-0.6B", "local-dir")


def test_missing_required_export_flags(capsys):
    assert_user_error(*run_cli(capsys)[::2], "--target and --out required")


def test_bad_choice(capsys):
    assert_user_error(*run_cli(capsys, "--target", "tflite", "--out", "x")[::2], "invalid choice: 'tflite'")


def test_make_model_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = run_cli(capsys, "make-model", "--shape", "0.6b", "--layers", "1", "--out", str(out))
    assert_user_error(code, err, "already exists and is not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "user data"


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """An export that dies midway leaves neither the output dir nor a partial temp dir."""
    import exporter.make_model as make_model

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(make_model, "save_file", boom)
    with pytest.raises(RuntimeError):
        make_model.write_random_checkpoint(tmp_path / "out", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_user_error_as_a_real_process(tmp_path):
    """End to end in a subprocess: one line, exit 2, no traceback."""
    result = run_module("parity", "--model", str(tmp_path / "missing"))
    assert_user_error(result.returncode, result.stderr, "does not exist")


@pytest.mark.parametrize("command", ["", "export", "parity", "bench", "chat", "quantize", "make-model", "verify",
                                     "deploy", "serve"])
def test_help_for_every_subcommand(capsys, command):
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, *argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m exporter")
    assert len(out.splitlines()) > 5


def test_an_unknown_command_names_the_known_ones():
    result = run_module("bench-peers", "--help")
    assert_user_error(result.returncode, result.stderr, "invalid choice: 'bench-peers'", "'export'", "'verify'")
    assert result.stdout == ""


def test_export_is_the_command_when_the_first_argument_is_a_flag():
    assert parse(["--model", "tiny", "--target", "onnx", "--out", "x"]) == parse(
        ["export", "--model", "tiny", "--target", "onnx", "--out", "x"])
    assert parse([]).command == "export"


def test_one_flag_name_per_meaning(capsys):
    """--max-new-tokens in every command that generates; the old --new-tokens is still read, never shown."""
    assert parse(["bench", "--bundle", "b", "--new-tokens", "8"]).max_new_tokens == 8
    assert parse(["parity", "--bundle", "b", "--max-new-tokens", "8"]).max_new_tokens == 8
    for command in ("bench", "parity", "chat"):
        with pytest.raises(SystemExit):
            parse([command, "--help"])
        shown = capsys.readouterr().out
        assert "--max-new-tokens" in shown and "--new-tokens" not in shown.replace("--max-new-tokens", "")


def test_written_directories_get_the_users_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        out = write_random_checkpoint(tmp_path / "m", SMALL)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())


def test_parity_refuses_a_quantized_checkpoint_and_bad_json_path(capsys, tmp_path, small_checkpoint):
    qdir = tmp_path / "q"
    assert run_cli(capsys, "quantize", "--model", str(small_checkpoint), "--quant", "int8", "--out", str(qdir))[0] == 0
    assert_user_error(*run_cli(capsys, "parity", "--model", str(qdir))[::2], "quantized checkpoint")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(small_checkpoint), "--max-new-tokens", "4", "--json",
                               str(tmp_path / "no" / "such" / "dir" / "r.json"))[::2], "cannot write", "does not exist")
    assert_user_error(*run_cli(capsys, "parity", "--model", str(small_checkpoint), "--max-new-tokens", "0")[::2],
                      "--max-new-tokens must be >= 1")


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT (Ctrl-C), SIGTERM (kill, CI timeouts)
def test_interrupted_write_leaves_nothing_behind(tmp_path, signum):
    """Interrupt make-model while it writes its shards: no output dir, no partial temp dir, one line, exit 128+N."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "make-model", "--shape", "1.7b", "--layers", "8",
                             "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not any(p.name.startswith(".m.partial-") and any((p / "m").glob("*")) for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "make-model ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines()[-1] == "error: interrupted; nothing was left half-written"
    assert list(tmp_path.iterdir()) == []


def test_a_hub_id_without_network_says_so():
    """No hub is reachable from the tests: the message must say that, not a file-not-found or a traceback."""
    proc = run_module("--model", "Qwen/Qwen3-0.6B", "--target", "onnx", "--out", "unused",
                      env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot download Qwen/Qwen3-0.6B: HF_HUB_OFFLINE is set" in proc.stderr and "--local-dir" in proc.stderr


@pytest.mark.parametrize("argument", ["--bogus\nerror: forged second line", "x\x1e", "\udcff\udcfe"])
def test_an_argument_with_line_breaks_or_undecodable_bytes_stays_one_line(capsys, argument):
    """Found by tests/test_fuzz.py: the error echoes the argument; a line break in it made two lines, a lone
    surrogate (bytes that are not UTF-8) made printing the error itself fail."""
    assert_user_error(*run_cli(capsys, "verify", "--bundle", "x", argument)[::2], "unrecognized arguments")


def test_deploy_with_an_empty_android_path(capsys):
    """Found by tests/test_fuzz.py: --android '' was taken for no --android, and --ios None crashed."""
    assert_user_error(*run_cli(capsys, "deploy", "--bundle", "missing", "--android", "")[::2],
                      "is not the Android demo")
