"""deploy: verified bundles only, to the app that runs their backend, saying what was done."""

import shutil

import pytest

from tests.conftest import ET_8DA4W, ROOT, run_cli


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    from exporter.cli import main

    out = tmp_path_factory.mktemp("deploy") / "tiny-onnx"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int8", "--out", str(out)]) == 0
    return out


def fake_app(tmp_path):
    app = tmp_path / "android-demo"
    app.mkdir()
    shutil.copy(ROOT / "android-demo" / "settings.gradle.kts", app)
    return app


def test_android_takes_executorch_bundles_only(onnx_bundle, tmp_path, capsys):
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(onnx_bundle), "--android", str(fake_app(tmp_path)))
    assert code == 2 and "runs ExecuTorch bundles" in err


def test_android_without_adb_stages_the_bundle(tmp_path, capsys, monkeypatch, shared_export):
    bundle = tmp_path / "tiny-et"
    shutil.copytree(shared_export(*ET_8DA4W), bundle)
    monkeypatch.setenv("PATH", "/nonexistent")  # no adb
    app = fake_app(tmp_path)
    code, out, _ = run_cli(capsys, "deploy", "--bundle", str(bundle), "--android", str(app))
    assert code == 0 and "staged" in out and "no adb on PATH" in out and "adb push" in out
    from runtimes.verify import verify

    assert verify(app / "bundles" / "tiny-et", run=False)["ok"]


def fake_ios_app(tmp_path):
    app = tmp_path / "ios-demo"
    app.mkdir()
    shutil.copy(ROOT / "ios-demo" / "Package.swift", app)
    return app


def test_a_tampered_bundle_is_not_deployed(onnx_bundle, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(onnx_bundle, bundle)
    (bundle / "tokenizer.json").write_text("{}")
    app = fake_ios_app(tmp_path)
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(bundle), "--ios", str(app))
    assert code == 2 and "fails verification" in err
    assert not (app / "App").exists()


@pytest.mark.parametrize("package", [None, "// swift-tools-version:6.0\nlet package = 1\n"])
def test_ios_needs_the_demos_package(onnx_bundle, tmp_path, capsys, package):
    """Any other directory is refused before anything is created in it."""
    place = tmp_path / "somewhere"
    place.mkdir()
    if package is not None:
        (place / "Package.swift").write_text(package)
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(onnx_bundle), "--ios", str(place))
    assert code == 2 and "is not the iOS demo (no Package.swift with the QwenEdgeCore target)" in err, err
    assert sorted(p.name for p in place.iterdir()) == ([] if package is None else ["Package.swift"])


FAKE_ADB = r"""#!{python}
import json, sys
if sys.argv[1:] == ["devices"]:
    print("List of devices attached")
    print("emulator-5554\tdevice")
else:
    with open({log!r}, "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\n")
"""


def test_android_device_shell_arguments_cannot_be_reinterpreted(tmp_path, capsys, monkeypatch, shared_export):
    """adb shell joins its arguments with spaces for the device's shell: a bundle path with ';' and '$' in it
    must reach that shell as one word (the fake adb records what it was given; shlex reads it as sh would)."""
    import json
    import shlex
    import sys

    from exporter.deploy import ANDROID_DIR

    bundle = tmp_path / "b;echo INJECTED $EXTERNAL_STORAGE"
    shutil.copytree(shared_export(*ET_8DA4W), bundle)
    bin_dir, log = tmp_path / "bin", tmp_path / "adb.log"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB.format(python=sys.executable, log=str(log)))
    (bin_dir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    code, out, err = run_cli(capsys, "deploy", "--bundle", str(bundle), "--android", str(fake_app(tmp_path)))
    assert code == 0 and "pushed" in out, err
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    remote = f"{ANDROID_DIR}/{bundle.name}"
    shell = [shlex.split(" ".join(call[1:])) for call in calls if call[0] == "shell"]
    assert shell == [["rm", "-rf", remote], ["mkdir", "-p", ANDROID_DIR]], calls
    assert ["push", str(bundle), remote] in calls  # adb push's paths are arguments, never read by a shell


def test_not_the_android_app(tmp_path, capsys):
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(ROOT / "tests" / "golden" / "bundle"), "--android",
                           str(tmp_path))
    assert code == 2 and "is not the Android demo (no settings.gradle.kts)" in err
