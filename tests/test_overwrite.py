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
    refused(export(capsys, out, "--overwrite"), "not a bundle exactly as this tool wrote it",
            "notes.txt is not in the manifest")
    assert notes.is_file()


def test_our_bundle_and_an_empty_directory_are_replaced(capsys, tmp_path, bundle):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    assert export(capsys, out, "--overwrite", "--max-seq-len", "64")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["max_seq_len"] == 64  # the new one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(capsys, empty)[0] == 0 and owner(empty)[0] == "bundle"


def test_a_bundle_the_user_changed_is_refused_and_kept(capsys, tmp_path, bundle):
    """Ownership is proven by content: a changed file means the directory is no longer only what we wrote."""
    import shutil

    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    (out / "tokenizer.json").write_text('{"the user": "edited this"}')
    refused(export(capsys, out, "--overwrite"), "tokenizer.json has", "bytes, manifest says")
    assert (out / "tokenizer.json").read_text() == '{"the user": "edited this"}'


def test_a_users_directory_with_a_copied_manifest_is_refused(capsys, tmp_path, bundle):
    """The user's own tokenizer.json and model.onnx beside a manifest.json copied from a bundle (no
    manifest.sha256): the names match, the content does not."""
    out = tmp_path / "mine"
    sentinel(out, "tokenizer.json", "my tokenizer")
    sentinel(out, "model.onnx", "my model")
    (out / "manifest.json").write_bytes((bundle / "manifest.json").read_bytes())
    refused(export(capsys, out, "--overwrite"), "manifest.sha256 is missing")
    assert (out / "tokenizer.json").read_text() == "my tokenizer" and (out / "model.onnx").read_text() == "my model"


@pytest.mark.parametrize("manifest", ['{"format": "qwen-edge-bundle", "files": {"a/b": 1}}', "[]", '"x"', "{"])
def test_a_forged_or_malformed_manifest_is_refused(capsys, tmp_path, manifest):
    out = tmp_path / "forged"
    users = sentinel(out / "a", "b", "the user's file")
    (out / "manifest.json").write_text(manifest)
    refused(export(capsys, out, "--overwrite"), "--overwrite refuses", "not a bundle exactly as this tool wrote it")
    assert users.read_text() == "the user's file"


def test_target_all_output_is_replaced_only_when_every_bundle_passes(capsys, tmp_path, bundle):
    import shutil

    out = tmp_path / "all"
    shutil.copytree(bundle, out / "onnx")
    shutil.copytree(bundle, out / "executorch")
    assert owner(out)[0] == "bundles"
    notes = sentinel(out / "executorch")
    found, why = owner(out)
    assert found is None and "executorch/" in why and "notes.txt" in why
    assert notes.is_file()


def checkpoint_with_marker(tmp_path, marker, content):
    model = copy_checkpoint(ROOT / "runtimes" / "models" / "tiny", tmp_path / "real")
    (model / marker).write_text(content)
    return model


@pytest.mark.parametrize("content", ["{}", '{"files": {}}', '{"files": {"model.safetensors": 1}}'])
def test_an_empty_or_forged_random_model_marker_is_refused(tmp_path, content):
    from exporter.make_model import write_random_checkpoint

    model = checkpoint_with_marker(tmp_path, "qwen-edge-random-model.json", content)
    weights = (model / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="qwen-edge-random-model.json"):
        write_random_checkpoint(model, SMALL, seed=3, dtype="float32", overwrite=True)
    assert (model / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("content", ["{}", '{"recipe": {}, "weights": {}}'])
def test_an_empty_quant_recipe_is_refused(capsys, tmp_path, content):
    model = checkpoint_with_marker(tmp_path, "quant_recipe.json", content)
    weights = (model / "model.safetensors").read_bytes()
    refused(run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int8", "--out", str(model), "--overwrite"),
            "not a quantized checkpoint exactly as this tool wrote it", "quant_recipe.json lists no files")
    assert (model / "model.safetensors").read_bytes() == weights


def test_quantized_checkpoints_are_replaced_only_unchanged(capsys, tmp_path):
    qdir = tmp_path / "q"
    assert run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int8", "--out", str(qdir))[0] == 0
    recipe = json.loads((qdir / "quant_recipe.json").read_text())
    assert sorted(recipe["files"]) == sorted(p.name for p in qdir.iterdir() if p.name != "quant_recipe.json")
    assert run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int4", "--out", str(qdir), "--overwrite")[0] == 0
    with open(qdir / "model.safetensors", "r+b") as f:  # one byte of the user's, same size
        f.seek(-1, 2)
        f.write(b"\x01")
    refused(run_cli(capsys, "quantize", "--model", "tiny", "--quant", "int8", "--out", str(qdir), "--overwrite"),
            "model.safetensors was changed")
    (qdir / "config.json").unlink()
    assert "config.json is missing" in owner(qdir)[1]


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
    with pytest.raises(UserError, match="notes.txt is not listed in its qwen-edge-random-model.json"):
        write_random_checkpoint(out, SMALL, seed=3, dtype="float32", overwrite=True)
    assert notes.is_file()
    notes.unlink()
    marker = out / "qwen-edge-random-model.json"
    old = {k: v for k, v in json.loads(marker.read_text()).items() if k != "files"}  # an older version's marker
    marker.write_text(json.dumps(old))
    with pytest.raises(UserError, match="lists no files with their sha256"):
        write_random_checkpoint(out, SMALL, seed=3, dtype="float32", overwrite=True)


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
    (tmp / "model.bin").write_text("new")
"""


@pytest.mark.parametrize("mode, step", [("exchange", "before-swap"), ("exchange", "after-swap"),
                                        ("rename", "before-swap"), ("rename", "after-aside"),
                                        ("rename", "after-swap")])
def test_a_kill_between_the_steps_of_a_swap_leaves_old_or_new(tmp_path, bundle, mode, step):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)  # the old one: a bundle of ours, so --overwrite replaces it
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, step, mode, str(out)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # the kill landed, at that step
    if mode == "exchange" or step != "after-aside":
        assert (out / ("manifest.json" if step == "before-swap" else "model.bin")).is_file()
    else:  # killed between the two renames: the old bundle waits beside, and the next run puts it back
        assert not out.exists() and len(list(tmp_path.glob(".bundle.old-*"))) == 1
    remove_stale(out)  # what every later run for the same --out does first
    assert (out / "manifest.json").is_file() or (out / "model.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp or aside directory left


def test_look_alike_leftovers_of_the_user_are_never_touched(capsys, tmp_path):
    """A user's .k.partial-999999-mine/ and .k.old-999998-mine/ (the pids are not running, and `k` is missing, as
    after a kill between two renames): not ours, so neither is removed nor renamed to `k`; a marker that does
    not repeat the name's token proves nothing either."""
    partial = sentinel(tmp_path / ".k.partial-999999-mine")
    aside = sentinel(tmp_path / ".k.old-999998-mine")
    forged = tmp_path / ".k.old-999997-abcd"
    sentinel(forged)
    (forged / ".qwen-edge-work.json").write_text(json.dumps({"out": "k", "pid": 999997, "token": "other"}))
    assert export(capsys, tmp_path / "k")[0] == 0
    assert partial.read_text() == aside.read_text() == (forged / "notes.txt").read_text() == "the user's own notes"
    assert (tmp_path / "k" / "manifest.json").is_file()


def test_our_own_leftovers_are_proven_by_their_marker(tmp_path):
    """A work directory made by this tool whose process died is found by its marker and cleaned; a set-aside
    old directory is put back when --out is missing."""
    import exporter.output as output

    out = tmp_path / "k"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    for kind in ("partial", "old"):
        work = output._work_dir(out, kind)
        renamed = work.with_name(work.name.replace(f"-{os.getpid()}-", f"-{pid}-"))
        marker = json.loads((work / output.WORK_MARKER).read_text())
        (work / output.WORK_MARKER).write_text(json.dumps({**marker, "pid": pid}))
        work.rename(renamed)
        sentinel(renamed / "k", text=kind)
    remove_stale(out)
    assert (out / "notes.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["k"]


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
