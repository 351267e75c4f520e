import CoreML
import Foundation
import QwenEdgeCore

/// A Core ML bundle's packages behind the core's CoreMLFunctions (docs/coreml.md): each package compiled once,
/// each entry point loaded as its function (MLModelConfiguration.functionName, iOS 18), one MLState per chunk
/// package (made by its prefill function, passed to its decode function too). What runs in which order, with
/// which positions and masks, is QwenEdgeCore's CoreMLPlan / CoreMLRunner, tested on Linux; this file is the Core
/// ML calls only, and was not compiled here (Core ML exists on Apple platforms only).
/// @unchecked Sendable: ChatModel hands its runner to one generation task at a time (its `busy` flag).
final class CoreMLModel: CoreMLFunctions, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private var models: [String: MLModel] = [:]  // by entry point name
    private var stateMakers: [String: MLModel] = [:]  // by chunk file: its prefill function
    private var states: [String: MLState] = [:]  // by chunk file
    private var mask: (position: Int32, rows: Int, array: MLMultiArray)?  // one piece's, shared by its chunks

    init(bundle: URL, plan: CoreMLPlan, computeUnits: MLComputeUnits) throws {
        var compiled: [String: URL] = [:]
        let calls = CoreMLPlan.Step.allCases.flatMap { plan.chains[$0] ?? [] } + [plan.logits]
        for call in calls {
            if compiled[call.file] == nil {
                compiled[call.file] = try MLModel.compileModel(at: bundle.appendingPathComponent(call.file))
            }
            let configuration = MLModelConfiguration()
            configuration.computeUnits = computeUnits
            configuration.functionName = call.function
            let model = try MLModel(contentsOf: compiled[call.file]!, configuration: configuration)
            models[call.name] = model
            if call.stateful && stateMakers[call.file] == nil { stateMakers[call.file] = model }
        }
    }

    private func model(_ call: CoreMLPlan.Call) throws -> MLModel {
        guard let model = models[call.name] else { throw Failure(description: "\(call.name) is not loaded") }
        return model
    }

    private func output(_ result: MLFeatureProvider, _ call: CoreMLPlan.Call) throws -> MLMultiArray {
        guard let array = result.featureValue(for: call.output)?.multiArrayValue else {
            throw Failure(description: "\(call.name) returned no \(call.output)")
        }
        return array
    }

    func embed(_ call: CoreMLPlan.Call, _ feeds: CoreMLPlan.Feeds) throws -> MLMultiArray {
        let ids = try MLMultiArray(shape: [1, NSNumber(value: feeds.inputIds.count)], dataType: .int32)
        ids.withUnsafeMutableBufferPointer(ofType: Int32.self) { buffer, _ in
            for (i, id) in feeds.inputIds.enumerated() { buffer[i] = id }
        }
        let input = try MLDictionaryFeatureProvider(dictionary: ["input_ids": ids])
        return try output(try model(call).prediction(from: input), call)
    }

    private func maskArray(_ feeds: CoreMLPlan.Feeds, rows: Int, width: Int) throws -> MLMultiArray {
        if let mask, mask.position == feeds.position, mask.rows == rows { return mask.array }
        let array = try MLMultiArray(shape: [1, 1, NSNumber(value: rows), NSNumber(value: width)], dataType: .float16)
        array.withUnsafeMutableBufferPointer(ofType: Float16.self) { buffer, _ in
            for (i, value) in feeds.mask.enumerated() { buffer[i] = Float16(value) }
        }
        mask = (feeds.position, rows, array)
        return array
    }

    func chunk(_ call: CoreMLPlan.Call, _ hidden: MLMultiArray, _ feeds: CoreMLPlan.Feeds) throws -> MLMultiArray {
        guard let shape = call.inputs["causal_mask"], let state = states[call.file] else {
            throw Failure(description: "\(call.name) has no mask shape or state")
        }
        let position = try MLMultiArray(shape: [1], dataType: .int32)
        position[0] = NSNumber(value: feeds.position)
        let input = try MLDictionaryFeatureProvider(dictionary: [
            "hidden_states": hidden, "position": position,
            "causal_mask": try maskArray(feeds, rows: shape[2], width: shape[3]),
        ])
        return try output(try model(call).prediction(from: input, using: state), call)
    }

    func logits(_ call: CoreMLPlan.Call, _ hidden: MLMultiArray, row: Int) throws -> [Float] {
        // row `row` of [1, T, hidden] (outputs may be strided) as a [1, 1, hidden] input
        let size = hidden.shape[2].intValue
        let rowArray = try MLMultiArray(shape: [1, 1, NSNumber(value: size)], dataType: .float16)
        let values: [Float16] = hidden.withUnsafeBufferPointer(ofType: Float16.self) { buffer in
            let strides = hidden.strides.map(\.intValue)
            return (0..<size).map { buffer[row * strides[1] + $0 * strides[2]] }
        }
        rowArray.withUnsafeMutableBufferPointer(ofType: Float16.self) { buffer, _ in
            for (i, v) in values.enumerated() { buffer[i] = v }
        }
        let input = try MLDictionaryFeatureProvider(dictionary: ["hidden_states": rowArray])
        let logits = try output(try model(call).prediction(from: input), call)
        let vocab = logits.shape[2].intValue, stride = logits.strides[2].intValue
        return logits.withUnsafeBufferPointer(ofType: Float16.self) { buffer in
            (0..<vocab).map { Float(buffer[$0 * stride]) }
        }
    }

    func resetStates(_ chunkFiles: [String]) {
        states = [:]
        for file in chunkFiles {
            if let maker = stateMakers[file] { states[file] = maker.makeState() }
        }
        mask = nil
    }
}
