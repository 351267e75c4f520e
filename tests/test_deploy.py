"""deploy: verified bundles only, to the app that runs their backend, saying what was done."""

import json
import os
import shutil
import subprocess
import zipfile

import pytest

from runtimes.backends.executorch_kernels import OPERATORS
from tests.conftest import ET_8DA4W, ET_8DA4W_F32, ROOT, run_cli


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
    shutil.copytree(shared_export(*ET_8DA4W_F32), bundle)
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
    shutil.copytree(shared_export(*ET_8DA4W_F32), bundle)
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


@pytest.fixture
def int8_cache_bundle(tmp_path, shared_export):
    """The shared ExecuTorch bundle: the default export keeps its cache in int8 on our kernels."""
    bundle = tmp_path / "tiny-et8"
    shutil.copytree(shared_export(*ET_8DA4W), bundle)
    assert json.loads((bundle / "manifest.json").read_text())["kv_cache"]["dtype"] == "int8"
    return bundle


def write_aar(app, library: bytes | None, name="jni/arm64-v8a/libexecutorch.so"):
    """A stand-in for the demo's own ExecuTorch AAR: a zip holding `library` as its arm64 JNI library."""
    libs = app / "app" / "libs"
    libs.mkdir(parents=True)
    with zipfile.ZipFile(libs / "executorch.aar", "w", zipfile.ZIP_DEFLATED) as aar:
        aar.writestr("AndroidManifest.xml", "<manifest package='org.pytorch.executorch'/>")
        if library is not None:
            aar.writestr(name, library)
    return libs / "executorch.aar"


def deploy_int8(capsys, monkeypatch, bundle, app):
    monkeypatch.setenv("PATH", "/nonexistent")  # no adb: staged in the app folder
    return run_cli(capsys, "deploy", "--bundle", str(bundle), "--android", str(app))


def test_an_int8_cache_bundle_needs_the_apps_own_aar(int8_cache_bundle, tmp_path, capsys, monkeypatch):
    app = fake_app(tmp_path)
    code, _, err = deploy_int8(capsys, monkeypatch, int8_cache_bundle, app)
    assert code == 2 and "lacks" in err and "build_aar.sh" in err and "--kv-cache float32" in err, err
    assert len(err.strip().splitlines()) == 1 and not (app / "bundles").exists()


def test_an_aar_with_the_kernels_takes_int8_cache_bundles(int8_cache_bundle, tmp_path, capsys, monkeypatch):
    """The names sit past the scanner's first 1 MiB chunk and across its boundary, as in a real library."""
    app = fake_app(tmp_path)
    padding = os.urandom((1 << 20) - len(OPERATORS[0]) // 2)
    write_aar(app, padding + OPERATORS[0].encode() + b"\0" + os.urandom(4096) + OPERATORS[1].encode() + b"\0")
    code, out, err = deploy_int8(capsys, monkeypatch, int8_cache_bundle, app)
    assert code == 0 and "staged" in out, err
    assert (app / "bundles" / "tiny-et8" / "manifest.json").is_file()


@pytest.mark.parametrize("library,name,expected", [
    (b"\x7fELF" + OPERATORS[0].encode() + b"\0", "jni/arm64-v8a/libexecutorch.so", OPERATORS[1]),  # one of two
    (b"\x7fELF" + b"".join(n.encode() + b"\0" for n in OPERATORS), "jni/x86_64/libexecutorch.so",
     "has no jni/arm64-v8a/libexecutorch.so"),  # the kernels, but not for phones
])
def test_an_aar_without_the_kernels_is_refused(int8_cache_bundle, tmp_path, capsys, monkeypatch, library, name,
                                               expected):
    app = fake_app(tmp_path)
    write_aar(app, library, name)
    code, _, err = deploy_int8(capsys, monkeypatch, int8_cache_bundle, app)
    assert code == 2 and expected in err and "build_aar.sh" in err and "--kv-cache float32" in err, err
    assert len(err.strip().splitlines()) == 1 and not (app / "bundles").exists()


@pytest.mark.parametrize("damage", ["not a zip", "truncated", "bad data"])
def test_a_corrupt_aar_is_refused(int8_cache_bundle, tmp_path, capsys, monkeypatch, damage):
    app = fake_app(tmp_path)
    aar = write_aar(app, b"\x7fELF" + b"".join(n.encode() + b"\0" for n in OPERATORS) * 1000)
    data = aar.read_bytes()
    if damage == "not a zip":
        aar.write_bytes(b"PK\x03\x04 this is not an archive")
    elif damage == "truncated":
        aar.write_bytes(data[:len(data) // 2])
    else:  # the library's compressed bytes overwritten: the zip's directory is intact, its content is not
        with zipfile.ZipFile(aar) as z:
            info = z.getinfo("jni/arm64-v8a/libexecutorch.so")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        aar.write_bytes(data[:start] + b"\xff" * info.compress_size + data[start + info.compress_size:])
    code, _, err = deploy_int8(capsys, monkeypatch, int8_cache_bundle, app)
    assert code == 2 and "is not a readable AAR" in err and "build_aar.sh" in err, err
    assert len(err.strip().splitlines()) == 1 and not (app / "bundles").exists()


def test_a_float_cache_bundle_ignores_the_aar(tmp_path, capsys, monkeypatch, shared_export):
    """Stock ExecuTorch runs it: even an unreadable app AAR is none of its business."""
    bundle = tmp_path / "tiny-et"
    shutil.copytree(shared_export(*ET_8DA4W_F32), bundle)
    app = fake_app(tmp_path)
    write_aar(app, None).write_bytes(b"garbage")
    code, out, err = deploy_int8(capsys, monkeypatch, bundle, app)
    assert code == 0 and "staged" in out, err


BUILD_AAR = ROOT / "android-demo" / "executorch" / "build_aar.sh"


def test_the_aar_script_parses():
    assert subprocess.run(["bash", "-n", str(BUILD_AAR)], capture_output=True).returncode == 0


def test_the_aar_script_names_a_missing_ndk_in_one_line(tmp_path):
    """Run with nothing but PATH and HOME (a scratch one): the first missing prerequisite, one line, exit 2, and
    nothing written anywhere."""
    home = tmp_path / "home"
    home.mkdir()
    before = sorted(p.name for p in (ROOT / "android-demo").rglob("*"))
    proc = subprocess.run(["bash", str(BUILD_AAR)], capture_output=True, text=True, cwd=home, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert len(proc.stderr.splitlines()) == 1 and "ANDROID_NDK" in proc.stderr, proc.stderr
    assert list(home.iterdir()) == [] and sorted(p.name for p in (ROOT / "android-demo").rglob("*")) == before


def test_the_operator_names_are_the_ones_the_kernels_register():
    """deploy looks for OPERATORS in the AAR, the script for the names it reads from the source: the same ones."""
    import re

    source = (ROOT / "runtimes" / "kernels" / "kv8_attention.cpp").read_text()
    registered = re.findall(r'^EXECUTORCH_LIBRARY\((\w+), *"([^"]+)"', source, re.M)
    assert tuple(f"{ns}::{name}" for ns, name in registered) == OPERATORS


def test_the_apps_executorch_is_the_exporters_release():
    """Maven's AAR and the one build_aar.sh builds (constraints.txt's pin) are the release the exporter writes for."""
    import re

    pin = re.search(r"^executorch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    gradle = (ROOT / "android-demo" / "app" / "build.gradle.kts").read_text()
    assert re.findall(r'"org\.pytorch:executorch-android:([^"]+)"', gradle) == [pin]
    assert 'files(ownExecuTorch)' in gradle and 'file("libs/executorch.aar")' in gradle


STAND_IN_TOOLS = {
    # the NDK's compiler and archiver, CMake, and ExecuTorch's own build script, each logging how it was called;
    # the "object" holds the names the real one would (the registration strings), the AAR holds $LIBRARY_NAMES
    "ndk/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android26-clang++":
        '#!/bin/bash\necho "clang $*" >> "$LOG"\nprintf "qwen_edge::kv8_update.out\\0qwen_edge::kv8_sdpa.out\\0" > "${@: -1}"\n',
    "ndk/toolchains/llvm/prebuilt/linux-x86_64/bin/llvm-ar": '#!/bin/bash\necho "ar $*" >> "$LOG"\ncat "$3" > "$2"\n',
    "bin/cmake": '#!/bin/bash\n[ "$1" = --version ] && { echo "cmake version 3.31.2"; exit 0; }\n'
                 'echo "cmake $* NDK=$ANDROID_NDK in $PWD" >> "$LOG"\n',
    "et/scripts/build_android_library.sh":
        '#!/bin/bash\necho "et SDK=$ANDROID_SDK ABIS=$ANDROID_ABIS in $PWD" >> "$LOG"\n'
        'python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1], \'w\').writestr('
        '\'jni/arm64-v8a/libexecutorch.so\', b\'ELF\' + sys.argv[2].encode())" "$BUILD_AAR_DIR/executorch.aar" '
        '"$LIBRARY_NAMES"\n',
}


def test_the_aar_script_drives_executorchs_build_with_our_library(tmp_path):
    """The script's plumbing with stand-ins for the NDK, CMake and ExecuTorch's build (the real ones are not on this
    machine), in a copy of the repository's files it reads: the kernels' library reaches the build directory's CMake
    cache, the AAR lands whole at app/libs/executorch.aar, and one that lacks the kernels never replaces it."""
    repo, tools = tmp_path / "repo", tmp_path / "tools"
    for name in ("android-demo/executorch/build_aar.sh", "constraints.txt", "runtimes/kernels/kv8_attention.cpp"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for name, text in STAND_IN_TOOLS.items():
        (tools / name).parent.mkdir(parents=True, exist_ok=True)
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    for name in ("ndk/build/cmake/android.toolchain.cmake", "sdk/platforms/.keep", "et/extension/android/CMakeLists.txt",
                 "et/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt", "et/third-party/flatbuffers/CMakeLists.txt"):
        (tools / name).parent.mkdir(parents=True, exist_ok=True)
        (tools / name).touch()
    (tools / "et" / "version.txt").write_text("1.5.1\n")
    log, aar = tmp_path / "log", repo / "android-demo" / "app" / "libs" / "executorch.aar"

    def build(names: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{tools / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path), "LOG": str(log),
               "TMPDIR": str(tmp_path), "ANDROID_NDK": str(tools / "ndk"), "ANDROID_HOME": str(tools / "sdk"),
               "EXECUTORCH_SRC": str(tools / "et"), "LIBRARY_NAMES": names}
        return subprocess.run(["bash", str(repo / "android-demo/executorch/build_aar.sh")], capture_output=True,
                              text=True, env=env, timeout=60)

    proc = build(" ".join(OPERATORS))
    assert proc.returncode == 0 and proc.stdout.strip() == str(aar), proc.stderr
    calls = log.read_text().splitlines()
    library = tools / "et" / "cmake-out-android-arm64-v8a" / "qwen_edge" / "libqwen_edge_kernels.a"
    assert [c.split()[0] for c in calls] == ["clang", "ar", "cmake", "et"] and library.is_file()
    assert {"-O3", "-ffp-contract=fast", "-fPIC", "-DC10_USING_CUSTOM_GENERATED_MACROS"} <= set(calls[0].split())
    assert (f"--preset android-arm64-v8a -B{tools / 'et' / 'cmake-out-android-arm64-v8a'} " in calls[2]
            and f"-DEXECUTORCH_JNI_CUSTOM_LIBRARY={library} " in calls[2] and f"in {tools / 'et'}" in calls[2])
    assert calls[3] == f"et SDK={tools / 'sdk'} ABIS=arm64-v8a in {tools / 'et'}"
    built = aar.read_bytes()

    log.write_text("")
    proc = build(OPERATORS[0])  # a build that lost one kernel
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "lacks qwen-edge's kernels" in proc.stderr
    assert aar.read_bytes() == built and sorted(p.name for p in aar.parent.iterdir()) == ["executorch.aar"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("qwen-edge-aar")] == []  # its scratch is gone

    log.write_text("")
    aar.write_bytes(b"an AAR of the user's")
    proc = build(" ".join(OPERATORS))
    assert proc.returncode == 2 and "is not an AAR this script built" in proc.stderr and log.read_text() == ""
    assert aar.read_bytes() == b"an AAR of the user's"
