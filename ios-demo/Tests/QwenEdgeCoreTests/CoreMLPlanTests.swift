import Foundation
import XCTest
@testable import QwenEdgeCore

/// The Core ML chaining against Fixtures/coreml_plan.json, which tests/test_coreml.py writes from a real export
/// (tiny int4 in two chunks) and checks against the Python plan: same chains, pieces and masks on both sides.
final class CoreMLPlanTests: XCTestCase {
    let fixtureURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/coreml_plan.json")

    func fixture() throws -> (JSONValue, BundleManifest) {
        let value = try JSON.parse(Data(contentsOf: fixtureURL))
        let manifestValue = try XCTUnwrap(value["manifest"])
        return (value, try BundleManifest.parse(Data(manifestValue.pretty().utf8)))
    }

    func testManifestEntryPointsAreAChain() throws {
        let (value, manifest) = try fixture()
        let plan = try CoreMLPlan(manifest)
        for step in CoreMLPlan.Step.allCases {
            let names = try XCTUnwrap(value["chains"]?[step.rawValue]?.arrayValue).compactMap(\.stringValue)
            XCTAssertEqual(plan.chains[step]?.map(\.name), names)
        }
        XCTAssertEqual(plan.prefillLen, 64)
        XCTAssertEqual(plan.maxSeqLen, 256)
        XCTAssertEqual(plan.chunkFiles, ["chunk_0.mlpackage", "chunk_1.mlpackage"])
        XCTAssertEqual(plan.chains[.prefill]?.map(\.function), ["prefill", "prefill", "prefill"])
        XCTAssertEqual(plan.chains[.decode]?[1].layers, [0, 1])
        XCTAssertEqual(plan.chains[.decode]?[2].layers, [2, 3])
        XCTAssertEqual(plan.chains[.decode]?[1].inputs["causal_mask"], [1, 1, 1, 256])
        XCTAssertEqual(plan.chains[.prefill]?[0].output, "hidden_states")
        XCTAssertEqual(plan.chains[.prefill]?[1].output, "hidden_states_out")
        XCTAssertEqual(plan.logits.file, "embed_head.mlpackage")
        XCTAssertEqual(plan.logits.output, "logits")
    }

    func testPiecesAndMasksAreThePythonPlans() throws {
        let (value, manifest) = try fixture()
        let plan = try CoreMLPlan(manifest)
        let cases = try XCTUnwrap(value["cases"]?.arrayValue)
        XCTAssertGreaterThan(cases.count, 3)
        for c in cases {
            let position = try XCTUnwrap(c["position"]?.intValue), count = try XCTUnwrap(c["count"]?.intValue)
            let expected = try XCTUnwrap(c["pieces"]?.arrayValue).map { p in
                CoreMLPlan.Piece(CoreMLPlan.Step(rawValue: p["step"]!.stringValue!)!, position: p["position"]!.intValue!,
                                 count: p["count"]!.intValue!, seqLen: p["seq_len"]!.intValue!)
            }
            let pieces = try plan.pieces(position: position, count: count)
            XCTAssertEqual(pieces, expected, "position \(position), \(count) tokens")
            let feeds = plan.feeds(pieces[0], Array(repeating: 5, count: pieces[0].count))
            let rows = try XCTUnwrap(c["first_mask_rows"]?.arrayValue).compactMap(\.stringValue)
            for (r, row) in rows.enumerated() {
                let mine = String(feeds.mask[r * plan.maxSeqLen..<(r + 1) * plan.maxSeqLen].map { $0 == 0 ? "1" : "0" })
                XCTAssertEqual(mine, row, "position \(position), row \(r)")
            }
            XCTAssertEqual(feeds.inputIds.count, pieces[0].seqLen)
            XCTAssertEqual(feeds.inputIds.filter { $0 == 5 }.count, pieces[0].count)
            XCTAssertEqual(feeds.position, Int32(position))
        }
        XCTAssertThrowsError(try plan.pieces(position: 250, count: 7)) { error in
            XCTAssertTrue("\(error)".contains("257 positions exceed the bundle's context of 256"), "\(error)")
        }
        XCTAssertThrowsError(try plan.pieces(position: 0, count: 0))
    }

    func testBrokenChainsAreRefused() throws {
        let (_, manifest) = try fixture()
        var noHead = manifest
        noHead.entryPoints.removeLast()
        var gap = manifest
        gap.entryPoints[5].layers = [3]
        var flexible = manifest
        flexible.entryPoints[2].inputs[0].shape[1] = .named("seq_len")
        var unnamed = manifest
        unnamed.entryPoints[3].function = nil
        for broken in [noHead, gap, flexible, unnamed] {
            XCTAssertThrowsError(try CoreMLPlan(broken)) { error in
                XCTAssertTrue("\(error)".contains("do not make a chain"), "\(error)")
            }
        }
    }

    /// Core ML stood in for by arithmetic: hidden states are the token ids (plus 1000 per chunk passed), the logits
    /// one-hot at the last hidden value; every call is logged with its state.
    final class FakeFunctions: CoreMLFunctions {
        var log: [String] = []
        var resets = 0

        func embed(_ call: CoreMLPlan.Call, _ feeds: CoreMLPlan.Feeds) throws -> [Int] {
            log.append("\(call.name) ids=\(feeds.inputIds.count)")
            return feeds.inputIds.map(Int.init)
        }

        func chunk(_ call: CoreMLPlan.Call, _ hidden: [Int], _ feeds: CoreMLPlan.Feeds) throws -> [Int] {
            log.append("\(call.name) state=\(call.file) position=\(feeds.position) mask=\(feeds.mask.count)")
            return hidden.map { $0 + 1000 }
        }

        func logits(_ call: CoreMLPlan.Call, _ hidden: [Int], row: Int) throws -> [Float] {
            log.append("\(call.name) row=\(row)")
            var out = [Float](repeating: 0, count: 4096)
            out[hidden[row]] = 1
            return out
        }

        func resetStates(_ chunkFiles: [String]) { resets += 1 }
    }

    func testRunnerChainsEveryChunkAndReadsTheLastRealRow() throws {
        let (_, manifest) = try fixture()
        let functions = FakeFunctions()
        let runner = CoreMLRunner(plan: try CoreMLPlan(manifest), functions: functions)
        let prompt = Array(1...70)
        let logits = try runner.prefill(prompt)
        XCTAssertEqual(Sampler.argmax(logits), 2070)  // token 70 after two chunks
        XCTAssertEqual(runner.position, 70)
        XCTAssertEqual(functions.log, [
            "embed_head.prefill ids=64", "chunk_0.prefill state=chunk_0.mlpackage position=0 mask=16384",
            "chunk_1.prefill state=chunk_1.mlpackage position=0 mask=16384",
            "embed_head.prefill ids=64", "chunk_0.prefill state=chunk_0.mlpackage position=64 mask=16384",
            "chunk_1.prefill state=chunk_1.mlpackage position=64 mask=16384", "embed_head.logits row=5",
        ])
        functions.log = []
        XCTAssertEqual(Sampler.argmax(try runner.decode(9)), 2009)
        XCTAssertEqual(functions.log, [
            "embed_head.decode ids=1", "chunk_0.decode state=chunk_0.mlpackage position=70 mask=256",
            "chunk_1.decode state=chunk_1.mlpackage position=70 mask=256", "embed_head.logits row=0",
        ])
        XCTAssertEqual(try runner.feed([3, 4, 5], all: true).map(Sampler.argmax), [2003, 2004, 2005])
        runner.reset()
        XCTAssertEqual(runner.position, 0)
        XCTAssertEqual(functions.resets, 2)
    }
}
