"""`python -m exporter deploy`: put a verified bundle where a demo app finds it."""

from __future__ import annotations

import argparse

from exporter.deploy import deploy_android, deploy_ios

SUMMARY = "copy a bundle into the Android or iOS demo app"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, metavar="DIR", help="the bundle (verified first)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--android", metavar="APP_DIR", help="the Android demo: adb push when one device is attached, "
                                                            "else staged in APP_DIR/bundles with the command to run")
    where.add_argument("--ios", metavar="APP_DIR", help="the iOS demo: copied into APP_DIR/App/Bundles")


def run(args) -> int:
    if args.android is not None:  # (an empty --android '' is the Android demo's path too, and refused as such)
        lines = deploy_android(args.bundle, args.android)
    else:
        lines = deploy_ios(args.bundle, args.ios)
    for line in lines:
        print(line)
    return 0
