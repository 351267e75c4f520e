"""`python -m exporter deploy`: put a verified bundle where a demo app finds it, and say what was done.

Android: with `adb` on PATH and one device attached, the bundle is pushed to the app's external files dir
(/sdcard/Android/data/dev.qwenedge.demo/files/bundles/NAME, readable by the app without permissions);
otherwise it is staged in android-demo/bundles/NAME with the adb command to run later.
iOS: the bundle is copied into ios-demo/App/Bundles/NAME, which the app target bundles as a resource folder.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from runtimes.bundle import read_manifest
from runtimes.errors import UserError
from runtimes.files import regular_file

ANDROID_PACKAGE = "dev.qwenedge.demo"
ANDROID_DIR = f"/sdcard/Android/data/{ANDROID_PACKAGE}/files/bundles"
IOS_CORE_TARGET = "QwenEdgeCore"  # ios-demo/Package.swift's library target: what marks the demo's package


def _verified(bundle: str, backend: str, app: str, runtime: str) -> Path:
    """The bundle's path once it passes verification and runs on `backend` (its --target has the same name),
    the one the `app` demo uses (`runtime`: how the message names it)."""
    if not Path(bundle).is_dir():
        raise UserError(f"{bundle} is not a directory; pass a bundle written by python -m exporter --out DIR")
    manifest = read_manifest(bundle)  # every check of verify --no-run
    if manifest["backend"] != backend:
        raise UserError(f"the {app} demo runs {runtime} bundles; {bundle} is a {manifest['target']} bundle "
                        f"(export with --target {backend})")
    if backend == "executorch" and manifest["kv_cache"]["dtype"] == "int8":
        raise UserError(f"{bundle} keeps its KV cache in int8 on qwen-edge's own kernels, which the {app} demo's "
                        "prebuilt ExecuTorch library lacks; export it with --kv-cache auto for the demo, or build "
                        "ExecuTorch with runtimes/kernels/kv8_attention.cpp (docs/executorch.md)")
    return Path(bundle).resolve()


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
    src = _verified(bundle, "executorch", "Android", "ExecuTorch")
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
    src = _verified(bundle, "coreml", "iOS", "Core ML")
    target = app / "App" / "Bundles" / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy(src, target)
    return [f"copied {src} to {target}",
            f"open {app / 'Package.swift'} in Xcode, run the QwenEdge app on an iPhone (iOS 18+), pick {src.name}"]
