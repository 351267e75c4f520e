"""The targets by name: the one place outside a target's own module that names it. `--target` takes these names or
ALL; the CLI's choices for target options come from here too. Adding a target is a module in exporter/targets/ with
a Target (target.py) and one line below."""

from __future__ import annotations

from exporter.targets.coreml_target import COREML
from exporter.targets.executorch_target import EXECUTORCH
from exporter.targets.onnx_target import ONNX
from exporter.targets.target import Target
from runtimes.errors import UserError

TARGETS: dict[str, Target] = {target.name: target for target in (ONNX, EXECUTORCH, COREML)}
ALL = "all"  # --target all: every target above, each in a subdirectory of --out, from one quantization


def targets_named(name: str) -> list[Target]:
    """The targets --target `name` exports."""
    if name == ALL:
        return list(TARGETS.values())
    if name not in TARGETS:
        raise UserError(f"unknown target {name!r}; choose one of {', '.join([*TARGETS, ALL])}")
    return [TARGETS[name]]


def target_choices() -> tuple[str, ...]:
    return (*TARGETS, ALL)


def option_choices(field: str) -> tuple:
    """The values the targets take for option `field` of ExportOptions (the CLI's choices)."""
    return tuple(dict.fromkeys(value for target in TARGETS.values() for value in target.choices.get(field, ())))
