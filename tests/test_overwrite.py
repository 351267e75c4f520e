"""--overwrite never destroys what the tool did not write, and a replacement is atomic even under SIGKILL.

Every test works inside its own temporary directory with sentinel files; no real system path is ever named.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from exporter.output import atomic_output_dir, owner, remove_stale
from runtimes.errors import UserError
from tests.conftest import ROOT, SMALL, copy_checkpoint, run_cli


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real bundle (tiny, ONNX fp32), exported once and copied by the tests that change it."""
    from exporter.cli import main

    out = tmp_path_factory.mktemp("overwrite") / "b"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "fp32", "--out", str(out)]) == 0
    return out


def sentinel(directory, name="notes.txt", text="the user's own notes"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory / name


def export(capsys, out, *extra, model="tiny"):
    return run_cli(capsys, "--model", str(model), "--target", "onnx", "--quant", "fp32", "--out", str(out), *extra)


def refused(result, *words):
    code, _, err = result
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_out_that_contains_the_input_model_is_refused(capsys, tmp_path, small_checkpoint):
    parent = tmp_path / "P"
    model = copy_checkpoint(small_checkpoint, parent / "model")
    notes = sentinel(parent)
    before = sorted(p.name for p in model.iterdir())
    refused(export(capsys, parent, "--overwrite", model=model), "contains the input model")
    assert notes.read_text() == "the user's own notes" and sorted(p.name for p in model.iterdir()) == before


def test_out_that_is_the_input_model_is_refused(capsys, tmp_path, small_checkpoint):
    victim = copy_checkpoint(small_checkpoint, tmp_path / "victim")
    config = (victim / "config.json").read_bytes()
    refused(export(capsys, victim, "--overwrite", model=victim), "is or contains the input model")
    assert (victim / "config.json").read_bytes() == config and (victim / "model.safetensors").is_file()


def test_a_bundle_is_never_written_over_its_own_quantized_source(capsys, tmp_path):
    from exporter.cli import main

    qdir = tmp_path / "q"
    assert main(["quantize", "--model", "tiny", "--quant", "int8", "--out", str(qdir)]) == 0
    recipe = (qdir / "quant_recipe.json").read_bytes()
    refused(export(capsys, qdir, "--overwrite", model=qdir), "input model")
    # and quantize itself refuses to replace a checkpoint that is not a quantized one of ours
    model = copy_checkpoint(ROOT / "runtimes" / "models" / "tiny", tmp_path / "m")
    refused(run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int8", "--out", str(model), "--overwrite"),
            "--overwrite refuses", "no qwen-edge manifest")
    assert (qdir / "quant_recipe.json").read_bytes() == recipe and (model / "model.safetensors").is_file()


@pytest.mark.parametrize("place", ["home", "cwd", "above cwd", "mount point"])
def test_protected_places_are_refused_even_when_empty(capsys, tmp_path, monkeypatch, place):
    """The home directory, the current directory (or one above it) and filesystem roots: simulated inside
    tmp_path (HOME, the working directory and the mount test are redirected there)."""
    target = tmp_path / "place"
    target.mkdir()
    notes = sentinel(target)
    if place == "home":
        monkeypatch.setenv("HOME", str(target))
    elif place == "cwd":
        monkeypatch.chdir(target)
    elif place == "above cwd":
        (target / "inner").mkdir()
        monkeypatch.chdir(target / "inner")
    else:
        real = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(target) or real(p))
    refused(export(capsys, target, "--overwrite"), "cannot be written")
    assert notes.read_text() == "the user's own notes"


def test_a_foreign_directory_is_refused_and_kept(capsys, tmp_path):
    out = tmp_path / "photos"
    notes = sentinel(out, "IMG_0001.jpg", "pixels")
    refused(export(capsys, out), "already exists and is not empty", "--overwrite")
    refused(export(capsys, out, "--overwrite"), "--overwrite refuses", "no qwen-edge manifest")
    assert notes.read_text() == "pixels" and [p.name for p in out.iterdir()] == ["IMG_0001.jpg"]


def test_our_bundle_with_a_users_file_in_it_is_refused(capsys, tmp_path, bundle):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    notes = sentinel(out)
    refused(export(capsys, out, "--overwrite"), "files this tool did not write (notes.txt)")
    assert notes.is_file()


def test_our_bundle_and_an_empty_directory_are_replaced(capsys, tmp_path, bundle):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    (out / "model.onnx").write_bytes(b"stale")  # a damaged copy of ours is still ours to replace
    assert export(capsys, out, "--overwrite")[0] == 0
    assert (out / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(capsys, empty)[0] == 0 and owner(empty)[0] == "bundle"


def test_a_kind_is_replaced_only_by_its_own_kind(capsys, tmp_path, bundle):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    refused(run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int8", "--out", str(out), "--overwrite"),
            "it is a bundle, and this command writes a quantized checkpoint")
    assert owner(out)[0] == "bundle"


def test_random_models_are_ours_to_replace_and_nothing_else(tmp_path):
    from exporter.make_model import write_random_checkpoint

    out = tmp_path / "m"
    write_random_checkpoint(out, SMALL, seed=1, dtype="float32")
    assert owner(out)[0] == "random model"
    write_random_checkpoint(out, SMALL, seed=2, dtype="float32", overwrite=True)
    notes = sentinel(out)
    with pytest.raises(UserError, match="files this tool did not write"):
        write_random_checkpoint(out, SMALL, seed=3, dtype="float32", overwrite=True)
    assert notes.is_file()


def test_deploy_replaces_only_an_earlier_copy_never_a_users_folder(tmp_path, bundle):
    from exporter.deploy import _copy

    place = tmp_path / "ios" / "App" / "Bundles" / bundle.name
    _copy(bundle, place)
    _copy(bundle, place)  # an earlier copy of a bundle is replaced
    users = sentinel(place, "mine.txt")
    with pytest.raises(UserError, match="is not a bundle this tool copied there"):
        _copy(bundle, place)
    assert users.is_file()


# ---- the swap under SIGKILL ---------------------------------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import exporter.output as output
step, exchange, out = sys.argv[1], sys.argv[2] == "exchange", Path(sys.argv[3])
if not exchange:
    output._exchange = lambda a, b: False
output.after_step = lambda s: os.kill(os.getpid(), signal.SIGKILL) if s == step else None
with output.atomic_output_dir(out, "bundle", overwrite=True) as tmp:
    manifest = {"format": "qwen-edge-bundle", "files": {"model.bin": {}}}
    (tmp / "manifest.json").write_text(__import__("json").dumps(manifest))
    (tmp / "model.bin").write_text("new")
"""


def fake_bundle(out, content):
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "qwen-edge-bundle", "files": {"model.bin": {}}}))
    (out / "model.bin").write_text(content)


@pytest.mark.parametrize("mode, step", [("exchange", "before-swap"), ("exchange", "after-swap"),
                                        ("rename", "before-swap"), ("rename", "after-aside"),
                                        ("rename", "after-swap")])
def test_a_kill_between_the_steps_of_a_swap_leaves_old_or_new(tmp_path, mode, step):
    out = tmp_path / "bundle"
    fake_bundle(out, "old")
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, step, mode, str(out)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # the kill landed, at that step
    if mode == "exchange" or step != "after-aside":
        assert (out / "model.bin").read_text() == ("old" if step == "before-swap" else "new")
    else:  # killed between the two renames: the old bundle waits beside, and the next run puts it back
        assert not out.exists() and len(list(tmp_path.glob(".bundle.old-*"))) == 1
    remove_stale(out)  # what every later run for the same --out does first
    assert (out / "model.bin").read_text() in ("old", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp or aside directory left


def test_errors_name_the_users_path_not_the_temp_dir(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(UserError) as caught:
        with atomic_output_dir(out, "bundle") as tmp:
            raise UserError(f"{tmp}/model.onnx could not be written")
    assert str(caught.value) == f"{out}/model.onnx could not be written" and ".partial-" not in str(caught.value)
    with pytest.raises(OSError) as caught:
        with atomic_output_dir(out, "bundle") as tmp:
            open(tmp / "missing" / "x", "w")
    assert ".partial-" not in caught.value.filename and caught.value.filename.startswith(str(out))
