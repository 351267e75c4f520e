"""The --quant schemes, each said once: what its weights are, what it fixes about activations, which targets take
it, and the one-line refusals that go with it. export, quantize and the targets read these; nothing else decodes
a scheme's name."""

from __future__ import annotations

from dataclasses import dataclass

from runtimes.errors import UserError


@dataclass(frozen=True)
class QuantScheme:
    name: str  # --quant, and the manifest's quant.name
    bits: int  # of a weight: 32 and 16 unquantized
    method: str  # none, rtn (round to nearest) or awq (activation-aware scales and clipping, then rtn)
    granularity: str  # none, per-channel (one scale per output row) or group-wise (one per group of inputs)
    # what the scheme fixes about activations: float, int8-dynamic, or None where the target chooses
    activations: str | None = None
    recipe: str | None = None  # the weight quantization it runs (runtimes.quant.recipe.QuantRecipe.for_quant)
    only_for: str | None = None  # the one target that takes it, where only one does
    elsewhere: str | None = None  # what the other targets write instead under --target all
    refusal: str = ""  # why another target alone refuses it ({target} is that target)

    @property
    def quantized(self) -> bool:
        return self.method != "none"

    def for_target(self, target: str) -> QuantScheme:
        """The scheme `target` writes for this --quant under --target all."""
        return SCHEMES[self.elsewhere] if self.only_for not in (None, target) else self

    def check_target(self, target: str) -> None:
        if self.only_for not in (None, target):
            raise UserError(self.refusal.format(target=target))

    def check_activations(self, activations: str | None) -> None:
        if self.activations == "int8-dynamic" and activations == "float":
            raise UserError(f"--quant {self.name} runs int8 activations; drop --activations float")

    def takes_checkpoint(self, recorded: QuantScheme) -> bool:
        """Whether a checkpoint quantized as `recorded` holds this scheme's weights (8da4w runs int4's)."""
        return self.recipe is not None and self.recipe == recorded.recipe


SCHEMES: dict[str, QuantScheme] = {s.name: s for s in (
    QuantScheme("fp32", 32, "none", "none", activations="float"),
    QuantScheme("fp16", 16, "none", "none", activations="float"),  # the target stores and computes in fp16
    QuantScheme("int8", 8, "rtn", "per-channel", recipe="int8"),
    QuantScheme("int4", 4, "rtn", "group-wise", recipe="int4"),
    QuantScheme("awq-int4", 4, "awq", "group-wise", recipe="awq-int4"),
    # ExecuTorch's name for int4 weights run with 8-bit dynamic per-token activations (XNNPACK's kernels)
    QuantScheme("8da4w", 4, "rtn", "group-wise", activations="int8-dynamic", recipe="int4", only_for="executorch",
                elsewhere="int4", refusal="--quant 8da4w (8-bit dynamic activations, int4 weights) is ExecuTorch's "
                                          "XNNPACK scheme; for --target {target} use --quant int4"),
)}
DEFAULT = "int4"
# what `python -m exporter quantize` writes: the schemes that are a weight quantization of their own
CHECKPOINT_SCHEMES = tuple(name for name, s in SCHEMES.items() if s.recipe == name)


def scheme_named(name: str | None) -> QuantScheme:
    return SCHEMES[name or DEFAULT]


def scheme_of_recipe(method: str, bits: int) -> QuantScheme:
    """The scheme a quantized checkpoint's recipe is."""
    return SCHEMES["awq-int4" if method == "awq" else f"int{bits}"]


def require_symmetric(symmetric: bool, who: str) -> None:
    """`who` (a target, a profile, a kernel) runs symmetric weights only."""
    if not symmetric:
        raise UserError(f"{who} takes symmetric weights only; drop --asymmetric")
