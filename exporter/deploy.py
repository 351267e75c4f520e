"""`python -m exporter deploy`: put a verified bundle where a demo app finds it, and say what was done.

Android: with `adb` on PATH and one device attached, the bundle is pushed to the app's external files dir
(/sdcard/Android/data/dev.qwenedge.demo/files/bundles/NAME, readable by the app without permissions);
otherwise it is staged in android-demo/bundles/NAME with the adb command to run later.
iOS: the bundle is copied into ios-demo/App/Bundles/NAME, which the app target bundles as a resource folder.

An ExecuTorch bundle with an int8 KV cache runs on qwen-edge's own kernels (runtimes/kernels/kv8_attention.cpp),
which the stock ExecuTorch AAR from Maven lacks: it goes to Android only when the demo has its own AAR with them
(android-demo/executorch/build_aar.sh writes android-demo/app/libs/executorch.aar, which the app then uses).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path
from typing import IO

from runtimes.backends.executorch_kernels import OPERATORS
from runtimes.bundle import read_manifest
from runtimes.errors import UserError
from runtimes.files import regular_file

ANDROID_PACKAGE = "dev.qwenedge.demo"
ANDROID_DIR = f"/sdcard/Android/data/{ANDROID_PACKAGE}/files/bundles"
IOS_CORE_TARGET = "QwenEdgeCore"  # ios-demo/Package.swift's library target: what marks the demo's package
AAR_SCRIPT = "android-demo/executorch/build_aar.sh"  # builds the AAR below, with our kernels linked in
APP_AAR = Path("app") / "libs" / "executorch.aar"  # in the Android demo; app/build.gradle.kts prefers it to Maven's
AAR_JNI_LIBRARY = "jni/arm64-v8a/libexecutorch.so"  # an AAR's native libraries sit in jni/<abi>/
AAR_LIBRARY_MAX_BYTES = 1 << 30  # ExecuTorch's JNI library is tens of MB: a larger claim is not one


def _verified(bundle: str, backend: str, app: str, runtime: str) -> tuple[Path, dict]:
    """The bundle's path and manifest once it passes verification and runs on `backend` (its --target has the same
    name), the one the `app` demo uses (`runtime`: how the message names it)."""
    if not Path(bundle).is_dir():
        raise UserError(f"{bundle} is not a directory; pass a bundle written by python -m exporter --out DIR")
    manifest = read_manifest(bundle)  # every check of verify --no-run
    if manifest["backend"] != backend:
        raise UserError(f"the {app} demo runs {runtime} bundles; {bundle} is a {manifest['target']} bundle "
                        f"(export with --target {backend})")
    return Path(bundle).resolve(), manifest


def _operators_missing(library: IO[bytes]) -> list[str]:
    """The operator names (OPERATORS) that a binary stream never contains. EXECUTORCH_LIBRARY keeps each name as one
    string literal, which stripping the library leaves in place; read in chunks that overlap by a name's length."""
    missing, tail = set(OPERATORS), b""
    while missing and (chunk := library.read(1 << 20)):
        window = tail + chunk
        missing -= {name for name in missing if name.encode() in window}
        tail = window[-max(len(name) for name in OPERATORS):]
    return sorted(missing)


def _check_app_has_kernels(app: Path, bundle: Path) -> None:
    """Refuse an int8-cache bundle unless the demo's own AAR registers qwen-edge's kernels (read inside the zip)."""
    aar = app / APP_AAR
    fix = f"build it with {AAR_SCRIPT}, or export the bundle with --kv-cache float32"
    if not aar.is_file():
        raise UserError(f"{bundle.name} keeps its KV cache in int8 on qwen-edge's own ExecuTorch kernels, which the "
                        f"Android demo's stock ExecuTorch (Maven) lacks, and {aar} is not there: {fix}")
    try:
        with zipfile.ZipFile(aar) as archive:
            if archive.getinfo(AAR_JNI_LIBRARY).file_size > AAR_LIBRARY_MAX_BYTES:
                raise UserError(f"{aar}'s {AAR_JNI_LIBRARY} claims more than {AAR_LIBRARY_MAX_BYTES >> 30} GiB, "
                                f"which no ExecuTorch library is: {fix}")
            with archive.open(AAR_JNI_LIBRARY) as library:
                missing = _operators_missing(library)
    except KeyError:
        raise UserError(f"{aar} has no {AAR_JNI_LIBRARY}, so it is not an ExecuTorch AAR for arm64 phones: {fix}")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
        raise UserError(f"{aar} is not a readable AAR (zip) file ({type(e).__name__}: {e}): {fix}")
    if missing:
        raise UserError(f"{aar} lacks qwen-edge's kernels ({', '.join(missing)} not in its {AAR_JNI_LIBRARY}), "
                        f"which {bundle.name}'s int8 KV cache runs on: {fix}")


def _copy(src: Path, dst: Path) -> None:
    """Copy a bundle into the app, replacing only an earlier copy of a bundle (never a folder of the user's)."""
    from exporter.output import atomic_output_dir, owner  # torch, through quant.recipe: adb's path needs neither

    if dst.is_dir() and owner(dst)[0] not in ("bundle", "empty"):
        raise UserError(f"{dst} exists and is not a bundle this tool copied there ({owner(dst)[1]}); rename or "
                        "remove it, or rename your bundle")
    with atomic_output_dir(dst, "bundle", overwrite=True, inputs=[src]) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _adb_devices() -> list[str]:
    if shutil.which("adb") is None:
        return []
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("device")]


def _device_shell(*argv: str) -> list[str]:
    """`adb shell` joins its arguments with spaces and hands them to the device's shell, which would read a
    bundle path holding ';', '$' or spaces as more commands: each argument goes quoted, as one word."""
    return ["adb", "shell", " ".join(shlex.quote(arg) for arg in argv)]


def deploy_android(bundle: str, app_dir: str) -> list[str]:
    app = Path(app_dir)
    if not (app / "settings.gradle.kts").is_file():
        raise UserError(f"{app_dir} is not the Android demo (no settings.gradle.kts); pass --android android-demo")
    src, manifest = _verified(bundle, "executorch", "Android", "ExecuTorch")
    if manifest["kv_cache"]["dtype"] == "int8":
        _check_app_has_kernels(app, src)
    devices = _adb_devices()
    remote = f"{ANDROID_DIR}/{src.name}"
    if len(devices) == 1:
        subprocess.run(_device_shell("rm", "-rf", remote), check=False, capture_output=True)
        subprocess.run(_device_shell("mkdir", "-p", ANDROID_DIR), check=True, capture_output=True)
        push = subprocess.run(["adb", "push", str(src), remote], capture_output=True, text=True)
        if push.returncode != 0:
            raise UserError(f"adb push failed ({push.stderr.strip().splitlines()[-1] if push.stderr else 'no output'});"
                            " is the app installed and the device unlocked?")
        return [f"pushed {src} to {devices[0]}:{remote}", "open the qwen-edge app and pick it from the list"]
    staged = app / "bundles" / src.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    _copy(src, staged)
    why = "no adb on PATH" if shutil.which("adb") is None else f"{len(devices)} devices attached (need exactly 1)"
    return [f"staged {src} in {staged} ({why})",
            f"push it later with: adb shell mkdir -p {ANDROID_DIR} && adb push {shlex.quote(str(staged))} "
            f"{shlex.quote(remote)}"]


def deploy_ios(bundle: str, app_dir: str) -> list[str]:
    app = Path(app_dir)
    package = app / "Package.swift"
    if (not regular_file(package) or package.stat().st_size > 1 << 20
            or IOS_CORE_TARGET not in package.read_text(errors="replace")):
        raise UserError(f"{app_dir} is not the iOS demo (no Package.swift with the {IOS_CORE_TARGET} target); pass "
                        "--ios ios-demo")
    src, _ = _verified(bundle, "coreml", "iOS", "Core ML")
    target = app / "App" / "Bundles" / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy(src, target)
    return [f"copied {src} to {target}",
            f"open {app / 'Package.swift'} in Xcode, run the QwenEdge app on an iPhone (iOS 18+), pick {src.name}"]
