import CoreML
import Foundation
import QwenEdgeCore

/// A Core ML bundle's stateful model.mlpackage behind the core's LanguageModel: the KV cache is an MLState;
/// each call passes input_ids [1, T] and the causal mask [1, 1, T, P + T] whose width tells the program its
/// start position (see exporter/targets/coreml.py). Prompts go in chunks of at most `manifest.chunk` tokens.
/// @unchecked Sendable: ChatModel hands it to one generation task at a time (its `busy` flag), never to two.
final class CoreMLModel: LanguageModel, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let model: MLModel
    private var state: MLState
    private let manifest: BundleManifest
    private(set) var position = 0
    var maxSeqLen: Int { manifest.maxSeqLen }

    init(bundle: URL, manifest: BundleManifest, computeUnits: MLComputeUnits) throws {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        let compiled = try MLModel.compileModel(at: bundle.appendingPathComponent(manifest.entryFiles[0]))
        model = try MLModel(contentsOf: compiled, configuration: configuration)
        state = model.makeState()
        self.manifest = manifest
    }

    private func call(_ tokens: [Int]) throws -> [Float] {
        let n = tokens.count
        let end = position + n
        guard end <= manifest.maxSeqLen else {
            throw Failure(description: "\(end) positions exceed the context of \(manifest.maxSeqLen)")
        }
        let ids = try MLMultiArray(shape: [1, NSNumber(value: n)], dataType: .int32)
        for (i, t) in tokens.enumerated() { ids[i] = NSNumber(value: t) }
        let mask = try MLMultiArray(shape: [1, 1, NSNumber(value: n), NSNumber(value: end)], dataType: .float16)
        for q in 0..<n {
            for k in 0..<end {
                mask[q * end + k] = NSNumber(value: k <= position + q ? 0 : -Float.infinity)
            }
        }
        let input = try MLDictionaryFeatureProvider(dictionary: ["input_ids": ids, "causal_mask": mask])
        let output = try model.prediction(from: input, using: state)
        position = end
        guard let logits = output.featureValue(for: "logits")?.multiArrayValue else {
            throw Failure(description: "the model returned no logits")
        }
        let vocab = manifest.vocabSize
        let offset = (n - 1) * vocab  // the last position's row of [1, T, vocab]
        return (0..<vocab).map { logits[offset + $0].floatValue }
    }

    func prefill(_ tokens: [Int]) throws -> [Float] {
        var logits: [Float] = []
        var start = 0
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + max(manifest.chunk, 1), tokens.count)])
            logits = try call(chunk)
            start += chunk.count
        }
        return logits
    }

    func decode(_ token: Int) throws -> [Float] { try call([token]) }

    func reset() {
        state = model.makeState()
        position = 0
    }
}
