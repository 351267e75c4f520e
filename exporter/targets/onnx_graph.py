"""Hand-built ONNX graphs on onnx_ir (as ONNX Runtime GenAI's builder builds its own): a small builder shared by
the CPU graph (onnx_cpu.py) and the NPU graphs (onnx_npu.py), and the weight layouts of ONNX Runtime's
block-quantized ops, which hold our quantizer's codes exactly."""

from __future__ import annotations

import errno

from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from runtimes.quant.packing import int8_block, pack_int4
from runtimes.quant.rtn import QuantizedTensor

WEIGHTS_FILE = "model.onnx.data"
DTYPES = {"float32": ir.DataType.FLOAT, "float16": ir.DataType.FLOAT16, "int64": ir.DataType.INT64,
          "int32": ir.DataType.INT32, "int8": ir.DataType.INT8}
DTYPE_NAMES = {value: name for name, value in DTYPES.items()}


class Graph:
    """Named inputs and outputs, nodes with fresh output names, initializers that several graphs of one bundle
    can share (made once, by name, in `tensors`), and graph-local constants."""

    def __init__(self, name: str, opset: int, tensors: dict[str, ir.TensorProtocol] | None = None):
        self.name, self.opset = name, opset
        self.tensors = {} if tensors is None else tensors
        self.nodes: list[ir.Node] = []
        self.inputs: list[ir.Value] = []
        self.outputs: list[ir.Value] = []
        self.initializers: dict[str, ir.Value] = {}
        self.domains: set[str] = set()
        self.count = 0

    def input(self, name: str, dtype: str, shape: list) -> ir.Value:
        value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(DTYPES[dtype]))
        self.inputs.append(value)
        return value

    def output(self, value: ir.Value, name: str, dtype: str, shape: list) -> None:
        value.name, value.shape, value.type = name, ir.Shape(shape), ir.TensorType(DTYPES[dtype])
        self.outputs.append(value)

    def weight(self, name: str, make) -> ir.Value:
        """Initializer `name`: make() (a numpy array or an onnx_ir tensor) runs once per bundle."""
        if name not in self.initializers:
            if name not in self.tensors:
                made = make()
                self.tensors[name] = ir.tensor(np.ascontiguousarray(made), name=name) \
                    if isinstance(made, np.ndarray) else made
                self.tensors[name].name = name
            tensor = self.tensors[name]
            self.initializers[name] = ir.Value(name=name, shape=ir.Shape(tensor.shape),
                                               type=ir.TensorType(tensor.dtype), const_value=tensor)
        return self.initializers[name]

    def const(self, values, dtype=np.int64) -> ir.Value:
        self.count += 1
        name = f"const_{self.count}"
        tensor = ir.tensor(np.asarray(values, dtype=dtype), name=name)
        self.initializers[name] = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype),
                                           const_value=tensor)
        return self.initializers[name]

    def op(self, op_type: str, *inputs: ir.Value | None, outputs: int = 1, domain: str = "", **attrs):
        """A node; its output value(s), named after the op and a counter."""
        self.count += 1
        base = f"{op_type.lower()}_{self.count}"
        node = ir.node(op_type, list(inputs), attrs or None, domain=domain, num_outputs=outputs, name=base)
        for i, value in enumerate(node.outputs):
            value.name = base + (f"_{i}" if outputs > 1 else "")
        self.nodes.append(node)
        self.domains.add(domain)
        return node.outputs[0] if outputs == 1 else tuple(node.outputs)

    def branch(self, name: str, make) -> ir.Graph:
        """A subgraph (an If's branch): the nodes make() adds go into it, not into this graph, and the values make()
        returns are its outputs. Its nodes may read this graph's values (ONNX's outer scope); its constants and
        weights stay this graph's initializers."""
        outer, self.nodes = self.nodes, []
        try:
            outputs = list(make())
            return ir.Graph([], outputs, nodes=self.nodes, name=name)
        finally:
            self.nodes = outer

    def model(self) -> ir.Model:
        opsets = {"": self.opset}
        if "com.microsoft" in self.domains:
            opsets["com.microsoft"] = 1
        graph = ir.Graph(self.inputs, self.outputs, nodes=self.nodes, initializers=list(self.initializers.values()),
                         opset_imports=opsets, name=self.name)
        return ir.Model(graph, ir_version=10, producer_name="qwen-edge")


def save(model: ir.Model, path: Path) -> None:
    """The graph at `path`, its weights (every initializer above 1 KiB) in model.onnx.data beside it."""
    try:
        ir.save(model, path, external_data=WEIGHTS_FILE, size_threshold_bytes=1024)
    except OSError as exc:
        if exc.errno is None:  # numpy's tofile reports a short write ("N requested and M written") without errno
            raise OSError(errno.ENOSPC, f"short write: {exc}", str(path.parent / WEIGHTS_FILE)) from exc
        raise


def as_numpy(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach().float().numpy().astype(dtype)


def nbits_layout(qt: QuantizedTensor, scale_dtype=np.float32) -> tuple[np.ndarray, np.ndarray, int]:
    """(B, scales, block) of ONNX Runtime's MatMulNBits (and GatherBlockQuantized, which reads the same B) for our
    codes: B uint8 [out, blocks, block * bits / 8] of unsigned codes (code + 2^(bits-1) when symmetric, whose zero
    point is then MatMulNBits' default), scales [out, blocks]. int4 blocks are the quantizer's groups; an int8 row
    (one scale) is cut into int8_block(in) blocks that repeat its scale, which is exact. Scales (and zero points)
    are two-dimensional, the shape GatherBlockQuantized reads a table's in: a tied head's embedding gathers them as
    stored, with no Reshape for ONNX Runtime to fold into a copy at session load (4.9 MB at Qwen3's vocabulary)."""
    out_features, in_features = qt.shape
    block = qt.group_size if qt.bits == 4 else int8_block(in_features)
    blocks = in_features // block
    if qt.bits == 4:
        blob = pack_int4(qt.q, qt.symmetric).numpy().reshape(out_features, blocks, block // 2)
    else:
        if not qt.symmetric:
            raise ValueError("8-bit MatMulNBits weights here are symmetric (per output channel)")
        blob = (qt.q.to(torch.int16) + 128).to(torch.uint8).numpy().reshape(out_features, blocks, block)
    scales = qt.scales.float().numpy().reshape(out_features, -1)
    scales = np.repeat(scales, blocks // scales.shape[1], axis=1).astype(scale_dtype)
    return blob, scales, block


def nbits_weights(g: Graph, name: str, qt: QuantizedTensor, scale_dtype=np.float32):
    """MatMulNBits' B, scales (and zero points, None when symmetric) initializers of `qt` in `g`, made once per
    bundle under `name`.qweight / .scales / .zeros → (B, scales, zeros, block size)."""
    layout = {}

    def part(i: int) -> np.ndarray:
        if not layout:
            layout["parts"] = nbits_layout(qt, scale_dtype)
        return layout["parts"][i]

    blob = g.weight(f"{name}.qweight", lambda: part(0))
    scales = g.weight(f"{name}.scales", lambda: part(1))
    zeros = None if qt.symmetric else g.weight(f"{name}.zeros", lambda: nbits_zero_points(qt))
    block = qt.group_size if qt.bits == 4 else blob.shape[2]
    return blob, scales, zeros, block


def nbits_zero_points(qt: QuantizedTensor) -> np.ndarray:
    """An asymmetric int4 tensor's zero points, two 4-bit values a byte along the blocks (MatMulNBits' layout)."""
    zeros = qt.zeros.to(torch.int16)
    if zeros.shape[1] % 2:
        zeros = torch.nn.functional.pad(zeros, (0, 1))
    return (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).to(torch.uint8).numpy()  # [out, ceil(blocks / 2)]
