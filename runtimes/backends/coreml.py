"""The coreml backend: runs a Core ML bundle (docs/coreml.md) with coremltools' prediction API, chaining its
entry points: for each step (prefill or decode) the embedding, every chunk of layers with its own MLState
(the KV cache of its layers), then the LM head on the last hidden row. Core ML prediction exists only on macOS
(15+ for stateful models); elsewhere loading a Core ML bundle raises a clear error, and `validate_bundle` checks
what can be checked without predicting.

`CoreMLPlan` is the chaining without Core ML (which function runs with which inputs, positions and masks), read
from the manifest; ios-demo's QwenEdgeCore has the same plan in Swift (CoreMLPlan.swift), and both are checked
against ios-demo/Tests/QwenEdgeCoreTests/Fixtures/coreml_plan.json.
"""

from __future__ import annotations

import logging
import platform
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtimes.errors import UserError

COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")
STEPS = ("prefill", "decode")
PAD_ID = 0  # fills a prefill call past the prompt's end: its rows are never attended (see CoreMLPlan.pieces)


def _coremltools():
    try:
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise UserError("this bundle runs on Core ML through coremltools: pip install 'qwen-edge[coreml]'") from None
    return ct


@dataclass(frozen=True)
class Call:
    """One entry point as the plan calls it: its package file and function, the names and fixed shapes of its
    inputs, its one output's name, and whether it has states (a chunk of layers)."""
    name: str
    file: str
    function: str
    inputs: dict[str, list[int]]
    output: str
    stateful: bool
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Piece:
    """Tokens fed by one call of a step's chain: `count` real tokens at positions [position, position + count),
    padded to the step's length `seq_len`."""
    step: str
    position: int
    count: int
    seq_len: int


@dataclass
class CoreMLPlan:
    """The chaining of a Core ML bundle, from its manifest: `chains[step]` are the entry points one step runs in
    order (the embedding takes input_ids, each chunk hidden_states, position and causal_mask), `logits` the LM head
    on one hidden row; `prefill_len` is T, `max_seq_len` S."""
    chains: dict[str, list[Call]]
    logits: Call
    prefill_len: int
    max_seq_len: int
    hidden_size: int
    chunk_files: list[str] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, manifest: dict) -> "CoreMLPlan":
        def fail(why: str) -> UserError:
            return UserError(f"this Core ML bundle's entry points do not make a chain ({why}); export it again")

        calls: dict[str, list[Call]] = {"prefill": [], "decode": [], "logits": []}
        for entry in manifest["entry_points"]:
            function = entry.get("function")
            if function not in calls:
                raise fail(f"entry point {entry['name']!r} has function {function!r}, not prefill, decode or logits")
            shapes = {}
            for tensor in entry["inputs"]:
                if not all(isinstance(d, int) for d in tensor["shape"]):
                    raise fail(f"{entry['name']} input {tensor['name']} has a flexible shape")
                shapes[tensor["name"]] = list(tensor["shape"])
            if len(entry["outputs"]) != 1:
                raise fail(f"{entry['name']} has {len(entry['outputs'])} outputs, not one")
            calls[function].append(Call(entry["name"], entry["file"], function, shapes, entry["outputs"][0]["name"],
                                        bool(entry.get("states")), tuple(entry.get("layers", ()))))
        if len(calls["logits"]) != 1:
            raise fail("one logits entry point is needed")
        logits = calls["logits"][0]
        if list(logits.inputs) != ["hidden_states"]:
            raise fail("the logits entry point takes hidden_states only")
        hidden = logits.inputs["hidden_states"][-1]
        lengths = {}
        for step in STEPS:
            chain = calls[step]
            if not chain or "input_ids" not in chain[0].inputs:
                raise fail(f"the {step} chain does not start with an entry point taking input_ids")
            lengths[step] = chain[0].inputs["input_ids"][1]
            for call in chain[1:]:
                if set(call.inputs) != {"hidden_states", "position", "causal_mask"} or not call.stateful:
                    raise fail(f"{call.name} is not a chunk (hidden_states, position, causal_mask and states)")
                if call.inputs["hidden_states"] != [1, lengths[step], hidden] or \
                        call.inputs["causal_mask"] != [1, 1, lengths[step], manifest["max_seq_len"]]:
                    raise fail(f"{call.name}'s shapes do not match its step's")
        if lengths["decode"] != 1:
            raise fail("the decode step feeds more than one token")
        layers = [list(c.layers) for c in calls["decode"][1:]]
        if [i for chunk in layers for i in chunk] != list(range(manifest["architecture"]["num_hidden_layers"])) or \
                [c.file for c in calls["prefill"][1:]] != [c.file for c in calls["decode"][1:]]:
            raise fail("the chunks do not cover the layers once, in order, for both steps")
        return cls({step: calls[step] for step in STEPS}, logits, lengths["prefill"], manifest["max_seq_len"],
                   hidden, [c.file for c in calls["decode"][1:]])

    def pieces(self, position: int, count: int) -> list[Piece]:
        """How `count` tokens starting at `position` are fed: prefill calls of up to T real tokens while a whole
        call fits the cache (a piece of one token goes to decode), then decode calls. The padding of a prefill
        call writes keys and values past the real tokens, at positions no query attends before a later call
        overwrites them."""
        if count < 1:
            raise UserError("cannot prefill an empty prompt")
        if position + count > self.max_seq_len:
            raise UserError(f"{position + count} positions exceed the bundle's context of {self.max_seq_len}; "
                            "shorten the prompt or export with a larger --max-seq-len")
        out, done = [], 0
        while done < count:
            at, left = position + done, count - done
            if left >= 2 and at + self.prefill_len <= self.max_seq_len:
                n = min(left, self.prefill_len)
                out.append(Piece("prefill", at, n, self.prefill_len))
            else:
                n = 1
                out.append(Piece("decode", at, 1, 1))
            done += n
        return out

    def feeds(self, piece: Piece, token_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """The inputs a piece's chain takes besides hidden_states: input_ids (padded with PAD_ID), position and
        causal_mask."""
        ids = list(token_ids) + [PAD_ID] * (piece.seq_len - len(token_ids))
        return {"input_ids": np.asarray([ids], dtype=np.int32),
                "position": np.asarray([piece.position], dtype=np.int32),
                "causal_mask": causal_mask(piece.position, piece.seq_len, self.max_seq_len)}


def causal_mask(position: int, seq_len: int, max_seq_len: int) -> np.ndarray:
    """[1, 1, seq_len, max_seq_len] float16: 0 where query j (at position + j) may attend key k (k <= position + j),
    -inf elsewhere."""
    allowed = np.arange(max_seq_len)[None, :] <= (position + np.arange(seq_len))[:, None]
    return np.where(allowed, 0.0, -np.inf).astype(np.float16)[None, None]


class CoreMLBackend:
    name = "coreml"

    def __init__(self, bundle: Path, manifest: dict, compute_units: str = "all", threads: int | None = None):
        if sys.platform != "darwin":
            raise UserError(f"Core ML prediction needs macOS 15 or newer (this is {platform.system()}); run this "
                            "bundle on a Mac or an iPhone (ios-demo/), or check it here with the Linux-side "
                            "validation (tests/test_coreml.py)")
        if compute_units not in COMPUTE_UNITS:
            raise UserError(f"compute units must be one of {', '.join(COMPUTE_UNITS)}")
        ct = _coremltools()
        self.plan = CoreMLPlan.from_manifest(manifest)
        self.max_seq_len = manifest["max_seq_len"]
        self.vocab_size = manifest["architecture"]["vocab_size"]
        units = getattr(ct.ComputeUnit, compute_units.upper())
        self._compiled = tempfile.TemporaryDirectory(prefix="qwen-edge-coreml-")
        compiled, self.models = {}, {}
        for call in [c for chain in self.plan.chains.values() for c in chain] + [self.plan.logits]:
            try:
                if call.file not in compiled:  # each package compiled once, then loaded per function
                    compiled[call.file] = ct.models.utils.compile_model(
                        str(bundle / call.file), str(Path(self._compiled.name) / f"{Path(call.file).stem}.mlmodelc"))
                self.models[call.name] = ct.models.CompiledMLModel(compiled[call.file], units,
                                                                   function_name=call.function)
            except Exception as exc:
                raise UserError(f"Core ML cannot load {call.function} of {bundle / call.file} ({exc}); export the "
                                "bundle again") from None
        self.reset()

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int | None = None, compute_units: str = "all"):
        return cls(bundle, manifest, compute_units, threads)

    def reset(self) -> None:
        """Fresh caches: one MLState per chunk, made by its prefill function and shared with its decode one."""
        self.states = {call.file: self.models[call.name].make_state() for call in self.plan.chains["prefill"][1:]}
        self.position = 0

    def _run(self, piece: Piece, token_ids: list[int]) -> np.ndarray:
        """One piece through its step's chain → hidden states [1, seq_len, hidden]."""
        feeds = self.plan.feeds(piece, token_ids)
        chain = self.plan.chains[piece.step]
        hidden = self.models[chain[0].name].predict({"input_ids": feeds["input_ids"]})[chain[0].output]
        for call in chain[1:]:
            out = self.models[call.name].predict({"hidden_states": hidden, "position": feeds["position"],
                                                  "causal_mask": feeds["causal_mask"]}, state=self.states[call.file])
            hidden = out[call.output]
        return np.asarray(hidden)

    def _logits(self, row: np.ndarray) -> np.ndarray:
        call = self.plan.logits
        out = self.models[call.name].predict({"hidden_states": row.reshape(1, 1, -1).astype(np.float16)})
        return np.asarray(out[call.output], dtype=np.float32).reshape(-1)

    def _feed(self, token_ids: list[int], all_logits: bool) -> np.ndarray:
        rows = []
        pieces = self.plan.pieces(self.position, len(token_ids))
        done = 0
        for k, piece in enumerate(pieces):
            hidden = self._run(piece, token_ids[done:done + piece.count])
            done += piece.count
            wanted = range(piece.count) if all_logits else ([piece.count - 1] if k == len(pieces) - 1 else [])
            rows += [self._logits(hidden[0, r]) for r in wanted]
        self.position += len(token_ids)
        return np.stack(rows)

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        logits = self._feed([int(t) for t in token_ids], all_logits)
        return logits if all_logits else logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._feed([int(token_id)], False)[-1]


DTYPE_NAMES = {65568: "float32", 65552: "float16", 131104: "int32"}


def _functions(spec) -> dict:
    """function name → its FunctionDescription (a single-function package's is named main)."""
    if spec.description.functions:
        return {f.name: f for f in spec.description.functions}
    return {"main": spec.description}


def _blob_references(spec) -> list[tuple[str, int]]:
    """(weight file, offset) of every const every function reads from the weight file: the same pair twice means
    the file holds that weight once for two readers."""
    refs = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                values = [op.attributes["val"]] if op.type == "const" else []
                values += [arg.value for put in op.inputs.values() for arg in put.arguments if arg.HasField("value")]
                refs += [(v.blobFileValue.fileName, v.blobFileValue.offset) for v in values
                         if v.HasField("blobFileValue")]
    return refs


def validate_bundle(bundle: str | Path, manifest: dict) -> dict:
    """What can be checked without Core ML prediction: every package's spec loads; each entry point's function
    exists and has the manifest's inputs, outputs and states (names, fixed shapes, dtypes); each MIL program
    re-validates; the entry points make a chain (CoreMLPlan). → {"problems": [...], "ops": {op: count over every
    function}, "quantized": [(codes, scales) of each constexpr_blockwise_shift_scale], "spec_version": lowest,
    "packages": {file: {"functions": [...], "blob_refs": n, "blobs": distinct, "bytes": size}}}."""
    ct = _coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    problems, ops, quantized, versions, packages = [], Counter(), [], [], {}
    try:
        CoreMLPlan.from_manifest(manifest)
    except UserError as exc:
        problems.append(str(exc))
    by_file: dict[str, list[dict]] = {}
    for entry in manifest["entry_points"]:
        by_file.setdefault(entry["file"], []).append(entry)
    for file, entries in by_file.items():
        path = Path(bundle) / file
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        versions.append(spec.specificationVersion)
        functions = _functions(spec)
        for entry in entries:
            described = functions.get(entry.get("function", "main"))
            if described is None:
                problems.append(f"{entry['name']}: {file} has no function {entry.get('function')!r} "
                                f"(it has {sorted(functions)})")
                continue
            problems += _io_problems(entry, described)
        program = milproto_load(spec, spec.specificationVersion, model.weights_dir)
        try:
            program.validate()
        except Exception as exc:
            problems.append(f"{file}: MIL program does not validate: {exc}")
        for function in program.functions.values():
            for op in function.operations:
                ops[op.op_type] += 1
                if op.op_type == "constexpr_blockwise_shift_scale":
                    quantized.append((op.data.val, op.scale.val))
        refs = _blob_references(spec)
        packages[file] = {"functions": sorted(functions), "blob_refs": len(refs), "blobs": len(set(refs)),
                          "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file())}
    return {"problems": problems, "ops": dict(ops), "quantized": quantized,
            "spec_version": min(versions) if versions else 0, "packages": packages}


def _io_problems(entry: dict, described) -> list[str]:
    problems = []
    features = {"inputs": {f.name: f for f in described.input}, "outputs": {f.name: f for f in described.output},
                "states": {f.name: f for f in described.state}}
    for kind in ("inputs", "outputs", "states"):
        want = {t["name"]: t for t in entry.get(kind, [])}
        if set(want) != set(features[kind]):
            problems.append(f"{entry['name']} {kind}: model has {sorted(features[kind])}, manifest says {sorted(want)}")
            continue
        for name, tensor in want.items():
            feature = features[kind][name]
            array = feature.type.stateType.arrayType if kind == "states" else feature.type.multiArrayType
            dtype = DTYPE_NAMES.get(array.dataType, str(array.dataType))
            if dtype != tensor["dtype"]:
                problems.append(f"{entry['name']} {kind} {name}: dtype {dtype}, manifest says {tensor['dtype']}")
            if kind != "outputs" and list(array.shape) != tensor["shape"]:
                problems.append(f"{entry['name']} {kind} {name}: shape {list(array.shape)}, manifest says "
                                f"{tensor['shape']}")
            if kind == "inputs" and array.WhichOneof("ShapeFlexibility") is not None:
                problems.append(f"{entry['name']} input {name} has a flexible shape; the manifest says fixed")
    return problems
