import Foundation

/// How a Core ML bundle (docs/coreml.md) runs, without Core ML: which function of which package runs with which
/// inputs, positions and masks, read from the manifest. Mirrors runtimes/backends/coreml.py's CoreMLPlan; both are
/// tested against Tests/QwenEdgeCoreTests/Fixtures/coreml_plan.json.
///
/// A step (prefill: T tokens, decode: one) runs its chain in the manifest's order: the embedding (input_ids →
/// hidden states), then every chunk of layers (hidden states, position, causal mask → hidden states, keeping its
/// layers' keys and values in its own MLState), then the LM head (`logits`) on one hidden row.
public struct CoreMLPlan: Sendable {
    public enum Step: String, Sendable, CaseIterable {
        case prefill, decode
    }

    /// One entry point as the plan calls it.
    public struct Call: Equatable, Sendable {
        public let name: String, file: String, function: String
        /// Input name → fixed shape.
        public let inputs: [String: [Int]]
        /// The one output's name (the next call's hidden_states, or the logits).
        public let output: String
        public let stateful: Bool
        public let layers: [Int]
    }

    /// `count` real tokens at positions [position, position + count), padded to `seqLen` (the step's length).
    public struct Piece: Equatable, Sendable {
        public let step: Step, position: Int, count: Int, seqLen: Int

        public init(_ step: Step, position: Int, count: Int, seqLen: Int) {
            (self.step, self.position, self.count, self.seqLen) = (step, position, count, seqLen)
        }
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// What one piece's chain takes besides hidden states; the mask is row-major [seqLen, maxSeqLen], 0 where a
    /// query may attend and -infinity elsewhere.
    public struct Feeds: Sendable {
        public let inputIds: [Int32], position: Int32, mask: [Float]
    }

    /// Fills a prefill call past the prompt's end: those rows write keys and values no query attends before a
    /// later call overwrites them.
    public static let padId = 0

    public let chains: [Step: [Call]]
    public let logits: Call
    public let prefillLen: Int, maxSeqLen: Int, hiddenSize: Int

    /// The chunks' packages, in order: one MLState each, shared by its prefill and decode functions.
    public var chunkFiles: [String] { chains[.decode, default: []].dropFirst().map(\.file) }

    public init(_ manifest: BundleManifest) throws {
        func fail(_ why: String) -> Invalid {
            Invalid(description: "this Core ML bundle's entry points do not make a chain (\(why)); export it again")
        }
        var calls: [String: [Call]] = ["prefill": [], "decode": [], "logits": []]
        for entry in manifest.entryPoints {
            guard let function = entry.function, calls[function] != nil else {
                throw fail("entry point '\(entry.name)' has function \(entry.function ?? "(none)"), not prefill, decode "
                           + "or logits")
            }
            var shapes: [String: [Int]] = [:]
            for tensor in entry.inputs {
                guard let shape = tensor.fixedShape else {
                    throw fail("\(entry.name) input \(tensor.name) has a flexible shape")
                }
                shapes[tensor.name] = shape
            }
            guard entry.outputs.count == 1 else { throw fail("\(entry.name) has \(entry.outputs.count) outputs, not one") }
            calls[function]!.append(Call(name: entry.name, file: entry.file, function: function, inputs: shapes,
                                         output: entry.outputs[0].name, stateful: !entry.states.isEmpty,
                                         layers: entry.layers))
        }
        guard calls["logits"]!.count == 1, let logits = calls["logits"]!.first else {
            throw fail("one logits entry point is needed")
        }
        guard Array(logits.inputs.keys) == ["hidden_states"], let hidden = logits.inputs["hidden_states"]?.last else {
            throw fail("the logits entry point takes hidden_states only")
        }
        var chains: [Step: [Call]] = [:]
        var lengths: [Step: Int] = [:]
        for step in Step.allCases {
            let chain = calls[step.rawValue]!
            guard let first = chain.first, let ids = first.inputs["input_ids"], ids.count == 2 else {
                throw fail("the \(step.rawValue) chain does not start with an entry point taking input_ids")
            }
            lengths[step] = ids[1]
            for call in chain.dropFirst() {
                guard Set(call.inputs.keys) == ["hidden_states", "position", "causal_mask"], call.stateful else {
                    throw fail("\(call.name) is not a chunk (hidden_states, position, causal_mask and states)")
                }
                guard call.inputs["hidden_states"] == [1, ids[1], hidden],
                      call.inputs["causal_mask"] == [1, 1, ids[1], manifest.maxSeqLen] else {
                    throw fail("\(call.name)'s shapes do not match its step's")
                }
            }
            chains[step] = chain
        }
        guard lengths[.decode] == 1 else { throw fail("the decode step feeds more than one token") }
        let prefillChunks = chains[.prefill]!.dropFirst(), decodeChunks = chains[.decode]!.dropFirst()
        guard decodeChunks.flatMap(\.layers) == Array(0..<manifest.numHiddenLayers),
              prefillChunks.map(\.file) == decodeChunks.map(\.file) else {
            throw fail("the chunks do not cover the layers once, in order, for both steps")
        }
        self.chains = chains
        self.logits = logits
        prefillLen = lengths[.prefill]!
        maxSeqLen = manifest.maxSeqLen
        hiddenSize = hidden
    }

    /// How `count` tokens starting at `position` are fed: prefill calls of up to T real tokens while a whole call
    /// fits the cache (a piece of one token goes to decode), then decode calls.
    public func pieces(position: Int, count: Int) throws -> [Piece] {
        guard count >= 1 else { throw Invalid(description: "cannot prefill an empty prompt") }
        guard position + count <= maxSeqLen else {
            throw Invalid(description: "\(position + count) positions exceed the bundle's context of \(maxSeqLen); "
                          + "shorten the prompt or export with a larger --max-seq-len")
        }
        var out: [Piece] = []
        var done = 0
        while done < count {
            let at = position + done, left = count - done
            if left >= 2 && at + prefillLen <= maxSeqLen {
                let n = min(left, prefillLen)
                out.append(Piece(.prefill, position: at, count: n, seqLen: prefillLen))
                done += n
            } else {
                out.append(Piece(.decode, position: at, count: 1, seqLen: 1))
                done += 1
            }
        }
        return out
    }

    /// input_ids (padded with padId), the position and the causal mask of a piece.
    public func feeds(_ piece: Piece, _ tokens: [Int]) -> Feeds {
        var ids = tokens.map { Int32($0) }
        ids += Array(repeating: Int32(Self.padId), count: max(piece.seqLen - ids.count, 0))
        var mask = [Float](repeating: -.infinity, count: piece.seqLen * maxSeqLen)
        for row in 0..<piece.seqLen {
            for key in 0...min(piece.position + row, maxSeqLen - 1) { mask[row * maxSeqLen + key] = 0 }
        }
        return Feeds(inputIds: ids, position: Int32(piece.position), mask: mask)
    }
}

/// What CoreMLRunner needs from Core ML (the app's CoreMLModel; a test double here): the three kinds of call, on
/// hidden states it keeps in its own type, and fresh states.
public protocol CoreMLFunctions: AnyObject {
    associatedtype Hidden
    /// The first call of a step: input_ids [1, T] → hidden states [1, T, hidden].
    func embed(_ call: CoreMLPlan.Call, _ feeds: CoreMLPlan.Feeds) throws -> Hidden
    /// A chunk, with its file's state: hidden states, position and mask → hidden states.
    func chunk(_ call: CoreMLPlan.Call, _ hidden: Hidden, _ feeds: CoreMLPlan.Feeds) throws -> Hidden
    /// The LM head on row `row` of hidden states [1, T, hidden] → logits [vocab].
    func logits(_ call: CoreMLPlan.Call, _ hidden: Hidden, row: Int) throws -> [Float]
    /// New, empty states for every chunk file.
    func resetStates(_ chunkFiles: [String])
}

/// A Core ML bundle as the generation loop's LanguageModel: the plan's pieces through the chains, the LM head on
/// the last real row. Mirrors runtimes/backends/coreml.py's CoreMLBackend.
/// @unchecked Sendable: the app hands it to one generation task at a time, never to two.
public final class CoreMLRunner<Functions: CoreMLFunctions>: LanguageModel, @unchecked Sendable {
    public let plan: CoreMLPlan
    public let functions: Functions
    public private(set) var position = 0
    public var maxSeqLen: Int { plan.maxSeqLen }

    public init(plan: CoreMLPlan, functions: Functions) {
        (self.plan, self.functions) = (plan, functions)
        functions.resetStates(plan.chunkFiles)
    }

    /// Feeds `tokens` → the logits of the last one (all: of every one, for parity checks).
    public func feed(_ tokens: [Int], all: Bool = false) throws -> [[Float]] {
        let pieces = try plan.pieces(position: position, count: tokens.count)
        var rows: [[Float]] = []
        var done = 0
        for (k, piece) in pieces.enumerated() {
            let feeds = plan.feeds(piece, Array(tokens[done..<done + piece.count]))
            let chain = plan.chains[piece.step]!
            var hidden = try functions.embed(chain[0], feeds)
            for call in chain.dropFirst() { hidden = try functions.chunk(call, hidden, feeds) }
            let wanted = all ? Array(0..<piece.count) : (k == pieces.count - 1 ? [piece.count - 1] : [])
            for row in wanted { rows.append(try functions.logits(plan.logits, hidden, row: row)) }
            done += piece.count
        }
        position += tokens.count
        return rows
    }

    public func prefill(_ tokens: [Int]) throws -> [Float] { try feed(tokens).last! }

    public func decode(_ token: Int) throws -> [Float] { try feed([token]).last! }

    public func reset() {
        position = 0
        functions.resetStates(plan.chunkFiles)
    }
}
