"""Swapping modules of a model by their type, as ExecuTorch's LLM exporter does (its `replace_*` functions): a
target's twin of the one Qwen3 module (runtimes.model.share_weights) gets its attention cores, quantized linears,
embedding or norms replaced wherever a module of that type sits, not at paths spelled out by hand."""

from __future__ import annotations

from typing import Callable

from torch import nn


def replace_modules(root: nn.Module, kind: type, make: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """Each module of type `kind` under `root` (root itself excluded) becomes make(its qualified name, it), in
    module order; where `make` gives None it stays. → how many were replaced."""
    found = [(parent, f"{prefix}.{name}" if prefix else name, name, child)
             for prefix, parent in root.named_modules() for name, child in parent.named_children()
             if isinstance(child, kind)]
    replaced = 0
    for parent, qualified, name, child in found:
        new = make(qualified, child)
        if new is not None:
            setattr(parent, name, new)
            replaced += 1
    return replaced
