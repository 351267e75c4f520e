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


def test_a_tampered_bundle_is_not_deployed(onnx_bundle, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(onnx_bundle, bundle)
    (bundle / "tokenizer.json").write_text("{}")
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(bundle), "--ios", str(tmp_path))
    assert code == 2 and "fails verification" in err
    assert not (tmp_path / "App").exists()


def test_not_the_android_app(tmp_path, capsys):
    code, _, err = run_cli(capsys, "deploy", "--bundle", str(ROOT / "tests" / "golden" / "bundle"), "--android",
                           str(tmp_path))
    assert code == 2 and "is not the Android demo (no settings.gradle.kts)" in err
