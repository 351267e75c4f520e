"""The qnn backend: an NPU-profile ONNX bundle on Qualcomm's Hexagon NPU (HTP), through ONNX Runtime's QNN execution
provider (the `onnxruntime-qnn` plugin package) with CPU fallback disabled.

prefill.onnx and decode.onnx run wholly on HTP or not at all: a graph with a node HTP does not take is refused in one
UserError naming each such node and Qualcomm's reason. The host's share (embed.onnx on the CPU provider, the attention
bias, RoPE's tables, the KV cache) is the onnxruntime backend's NpuBackend, which runs the graphs through an `Htp`
from here; its name is then "qnn".

On a phone the graphs run on the NPU. On an x86 host `libQnnHtp.so` compiles them as for the phone (same HTP
architecture, same compiler) and runs the result in Qualcomm's HTP simulator: the outputs are the NPU's, the speed is
not the phone's (`simulated` is True, and reports label such timings so).

A bundle exported with --qnn-soc carries precompiled context binaries (ONNX Runtime EPContext models) per SoC; the
backend loads its SoC's when present, so nothing is compiled at load.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from runtimes.errors import UserError

EP_NAME = "QNNExecutionProvider"
PROVIDER_ENV, SOC_ENV = "QWEN_EDGE_NPU_PROVIDER", "QWEN_EDGE_QNN_SOC"


class Soc(NamedTuple):
    name: str
    title: str
    soc_model: int  # QNN's QNN_SOC_MODEL_* id, the QNN EP's soc_model option
    htp_arch: int  # the Hexagon NPU's version, the QNN EP's htp_arch option


# the phones the npu profile compiles for. (60 is the Snapdragon X Elite laptop chip, SC8380XP, HTP v73: not a phone)
SOCS = {s.name: s for s in (Soc("8gen2", "Snapdragon 8 Gen 2 (SM8550)", 43, 73),
                            Soc("8gen3", "Snapdragon 8 Gen 3 (SM8650)", 57, 75),
                            Soc("8elite", "Snapdragon 8 Elite (SM8750)", 69, 79))}
DEFAULT_SOC = "8gen3"


def check_soc(name: str) -> Soc:
    if name not in SOCS:
        raise UserError(f"unknown SoC {name!r}; choose one of {', '.join(SOCS)}")
    return SOCS[name]


def available() -> bool:
    """onnxruntime-qnn is installed."""
    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError:
        return False
    return True


def default_provider() -> str:
    """Where NPU bundles run here: "qnn" when onnxruntime-qnn is installed, else "cpu" (ONNX Runtime's CPU provider);
    QWEN_EDGE_NPU_PROVIDER=qnn|cpu chooses."""
    chosen = os.environ.get(PROVIDER_ENV) or ("qnn" if available() else "cpu")
    if chosen not in ("qnn", "cpu"):
        raise UserError(f"{PROVIDER_ENV}={chosen}: use qnn or cpu")
    return chosen


def versions() -> dict:
    """The QNN EP plugin and the Qualcomm AI Runtime (QNN SDK) it ships."""
    import onnxruntime_qnn
    from onnxruntime_qnn import build_and_package_info as info

    return {"onnxruntime_qnn": onnxruntime_qnn.__version__, "qnn_sdk": info.qnn_version}


def simulated() -> bool:
    """On an x86 host QNN's HTP backend compiles for the phone's NPU and runs the result in a simulator."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


_registered = False


def _ort():
    global _registered
    try:
        import onnxruntime as ort
        import onnxruntime_qnn
    except ImportError:
        raise UserError("the qnn backend needs ONNX Runtime's QNN execution provider: pip install 'qwen-edge[qnn]' "
                        "(or set QWEN_EDGE_NPU_PROVIDER=cpu to run the NPU graphs on the CPU)") from None
    if not _registered:
        if not any(d.ep_name == EP_NAME for d in ort.get_ep_devices()):
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        _registered = True
    return ort, onnxruntime_qnn


@contextlib.contextmanager
def _captured():
    """What C/C++ code writes to file descriptors 1 and 2 inside the block (ONNX Runtime's and the QNN EP's logs, and
    a line QNN's HTP libraries print to stdout), appended to the yielded list as one string when the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as log:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        text: list[str] = []
        try:
            yield text
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            log.seek(0)
            text.append(log.read().decode("utf-8", "replace"))


def session_options(soc: str, config: dict | None = None, log_level: int = 3):
    """SessionOptions that put a graph on QNN's HTP backend for `soc`, with CPU fallback disabled."""
    ort, qnn = _ort()
    chip = check_soc(soc)
    options = ort.SessionOptions()
    options.log_severity_level = log_level
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    options.add_provider_for_devices(devices, {"backend_path": qnn.get_qnn_htp_path(), "enable_htp_fp16_precision": "1",
                                               "soc_model": str(chip.soc_model), "htp_arch": str(chip.htp_arch)})
    return options


def _unsupported(log: str) -> list[tuple[str, str]]:
    """(name, op type) of each node the QNN EP's partitioner listed as unsupported."""
    nodes = []
    for line in log.splitlines():
        if "Unsupported nodes in QNN EP:" in line:
            nodes += re.findall(r"\{ name: ([^,]*), type: ([^ }]*) \}", line)
    return list(dict.fromkeys(nodes))


def _refusals(log: str) -> dict[str, tuple[str, str]]:
    """Node name -> (op type, Qualcomm's reason), from the QNN EP's verbose 'Validation FAILED' records and the HTP
    op validator's error codes."""
    codes = dict(re.findall(r"backendValidateOpConfig\(\) failed for node `([^`]*)` of type `[^`]*` with error code "
                            r"(\d+)", log))
    refused = {}
    for block in log.split("Validation FAILED")[1:]:
        block = block.split("Validation P")[0]
        reason = re.search(r"REASON : ([^\n]*)", block)
        for op, name in re.findall(r"Operator type: (\S*) Node name: (\S*)", block):
            text = reason.group(1).strip() if reason else "rejected"
            if name in codes:
                text += f" (HTP op validation error {codes[name]})"
            refused[name] = (op, text)
    return refused


def create_session(path: Path, soc: str, config: dict | None = None):
    """An InferenceSession of `path` wholly on HTP, or one UserError listing every node HTP does not take."""
    ort, _ = _ort()
    path = Path(path)
    with _captured() as log:
        try:
            return ort.InferenceSession(str(path), session_options(soc, config, log_level=2))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; the log says which nodes
            error = str(exc).strip().splitlines()[0][:300]
    with _captured() as verbose:  # once more, verbosely, for each refused node and Qualcomm's reason
        try:
            ort.InferenceSession(str(path), session_options(soc, config, log_level=0))
        except Exception:  # noqa: BLE001 - it fails as before; only its log is wanted
            pass
    refused = _refusals(log[0] + verbose[0])
    # the partitioner lists refused nodes when it placed some; when it placed none, the validator's records say which
    nodes = _unsupported(log[0] + verbose[0]) or [(name, op) for name, (op, _) in refused.items()]
    if not nodes:
        raise UserError(f"QNN's HTP backend cannot load {path} for {soc} ({error})")
    listed = "; ".join(f"{name or '(unnamed)'} ({op})" + (f": {refused[name][1]}" if name in refused else "")
                       for name, op in nodes)
    raise UserError(f"{path.name}: {len(nodes)} node(s) are not supported by QNN's HTP backend ({soc}) and CPU "
                    f"fallback is disabled: {listed}")


def placement(path: Path, soc: str) -> dict:
    """Where ONNX Runtime placed `path`'s nodes, from the QNN EP's verbose log (compiles the graph): the graph's node
    count, the nodes HTP's validator passed and refused (each counted once), and whether ORT reports all nodes placed
    on the QNN EP."""
    import onnx

    ort, _ = _ort()
    with _captured() as log:
        ort.InferenceSession(str(path), session_options(soc, log_level=0))
    verdicts: dict[str, bool] = {}  # a node is validated more than once (partitioning, then compiling)
    for verdict, block in re.findall(r"Validation (PASSED|FAILED) for \d+ nodes(.*?)(?=Validation |\Z)", log[0], re.S):
        for name in re.findall(r"Node name: (\S*)", block):
            verdicts[name] = verdicts.get(name, True) and verdict == "PASSED"
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    return {"nodes": nodes, "nodes_on_htp": sum(verdicts.values()),
            "nodes_refused": len(verdicts) - sum(verdicts.values()),
            "all_on_qnn": f"All nodes placed on [{EP_NAME}]" in log[0]}


def context_for(manifest: dict, soc: str) -> dict | None:
    """The bundle's precompiled context for `soc`, if it has one."""
    return next((c for c in (manifest.get("qnn") or {}).get("contexts", []) if c["soc"] == soc), None)


class Htp:
    """The npu profile's prefill and decode graphs placed on HTP for one SoC (`soc`, else $QWEN_EDGE_QNN_SOC, else
    the bundle's first precompiled SoC, else 8gen3), from the SoC's context binary when the bundle has one
    (`use_context=False` compiles the graphs anyway). The onnxruntime backend's NpuBackend runs the host's side."""

    def __init__(self, manifest: dict, soc: str | None = None, use_context: bool = True):
        _ort()
        contexts = (manifest.get("qnn") or {}).get("contexts", [])
        self.soc = check_soc(soc or os.environ.get(SOC_ENV) or next((c["soc"] for c in contexts), DEFAULT_SOC)).name
        self.context = context_for(manifest, self.soc) if use_context else None
        self.simulated = simulated()

    def session(self, bundle: Path, entry: dict):
        """The session of one of the bundle's entry points (prefill or decode), wholly on HTP."""
        if self.context:
            return create_session(bundle / self.context["entry_points"][entry["name"]], self.soc)
        return create_session(bundle / entry["file"], self.soc)

    def describe(self) -> dict:
        chip = SOCS[self.soc]
        return {"execution_provider": EP_NAME, "soc": chip.name, "soc_name": chip.title, "soc_model": chip.soc_model,
                "htp_arch": chip.htp_arch, "simulated": self.simulated, "context_binary": bool(self.context),
                "cpu_fallback": "disabled", **versions()}
