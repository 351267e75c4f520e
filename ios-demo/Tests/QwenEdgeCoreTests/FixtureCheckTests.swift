import Foundation
import XCTest
@testable import QwenEdgeCore

/// Logits rebuilt from a fixture: at each step the recorded top-k values on the recorded ids and every other id
/// below them, for the case whose prompt was prefilled; `bump` (case, step) lets the runner-up win there once.
final class ReplayModel: LanguageModel {
    let cases: [JSONValue], vocab: Int, bump: (Int, Int)?
    private(set) var position = 0
    let maxSeqLen = 256
    private var current = 0, promptLength = 0

    init(fixture: JSONValue, vocab: Int, bump: (Int, Int)? = nil) {
        (self.cases, self.vocab, self.bump) = (fixture["cases"]!.arrayValue!, vocab, bump)
    }

    private func logits() -> [Float] {
        let steps = cases[current]["steps"]!.arrayValue!
        let step = position - promptLength
        let record = steps[min(step, steps.count - 1)]
        let top = record["top_ids"]!.arrayValue!.map { $0.intValue! }
        let values = record["top_logits"]!.arrayValue!.map { Float($0.numberValue!.value) }
        var out = [Float](repeating: values.last! - 1, count: vocab)
        for (j, id) in top.enumerated() { out[id] = values[j] }
        if let (c, s) = bump, c == current, s == step { out[top[1]] = out[top[0]] + 0.5 }
        return out
    }

    func prefill(_ tokens: [Int]) throws -> [Float] {
        current = cases.firstIndex { $0["prompt_ids"]!.arrayValue!.map { $0.intValue! } == tokens }!
        promptLength = tokens.count
        position += tokens.count
        return logits()
    }

    func decode(_ token: Int) throws -> [Float] { position += 1; return logits() }
    func reset() { position = 0 }
}

/// FixtureCheck on tests/golden/reference_fixture.json (tiny's int4 ONNX bundle's fixture, judged by agreement):
/// it passes as recorded, fails with one flip at a wide margin, and passes with one flip at a near tie.
final class FixtureCheckTests: XCTestCase {
    func inputs() throws -> (BundleManifest, Data, JSONValue) {
        let manifest = try BundleManifest.parse(try Data(contentsOf: repoRoot.appendingPathComponent(
            "tests/golden/bundle/manifest.json")))
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/reference_fixture.json"))
        return (manifest, data, try JSON.parse(data))
    }

    func margin(_ fixture: JSONValue, _ c: Int, _ s: Int) -> Double {
        fixture["cases"]!.arrayValue![c]["steps"]!.arrayValue![s]["margin"]!.numberValue!.value
    }

    func testTheRecordedLogitsPass() throws {
        let (manifest, data, fixture) = try inputs()
        let report = try FixtureCheck.run(manifest: manifest, fixture: data,
                                          model: ReplayModel(fixture: fixture, vocab: manifest.vocabSize))
        XCTAssertTrue(report.passed, report.summary)
        XCTAssertTrue(report.greedyMatch)
        XCTAssertEqual(report.top1Agreement, 1.0)
        XCTAssertEqual(report.cases, 3)
        XCTAssertLessThanOrEqual(report.maxAbsLogitDiffTopK, 1e-6)
        XCTAssertTrue(report.summary.hasPrefix("reference fixture passed"))
    }

    func testOneFlipAtAWideMarginFails() throws {
        let (manifest, data, fixture) = try inputs()
        XCTAssertGreaterThan(margin(fixture, 0, 2), 1.0)  // the thinking case's third step: far from a tie
        let report = try FixtureCheck.run(manifest: manifest, fixture: data,
                                          model: ReplayModel(fixture: fixture, vocab: manifest.vocabSize, bump: (0, 2)))
        XCTAssertFalse(report.passed, report.summary)
        XCTAssertFalse(report.greedyMatch)  // the free run took the flipped token; teacher forcing did not
        XCTAssertEqual(report.disagreements, 1)
        XCTAssertEqual(report.maxDisagreementMargin, margin(fixture, 0, 2))
        XCTAssertLessThan(report.top1Agreement, 0.99)
        XCTAssertTrue(report.summary.hasPrefix("reference fixture FAILED"))
    }

    func testOneFlipAtANearTiePasses() throws {
        let (manifest, data, fixture) = try inputs()
        let steps = fixture["cases"]!.arrayValue![0]["steps"]!.arrayValue!
        let near = try XCTUnwrap(steps.indices.first { margin(fixture, 0, $0) < 0.5 }, "the fixture has a near tie")
        let report = try FixtureCheck.run(manifest: manifest, fixture: data,
                                          model: ReplayModel(fixture: fixture, vocab: manifest.vocabSize,
                                                             bump: (0, near)))
        XCTAssertTrue(report.passed, report.summary)
        XCTAssertEqual(report.disagreements, 1)
    }

    func testTheManifestNamesItsFixture() throws {
        let (manifest, _, _) = try inputs()
        XCTAssertNil(manifest.fixtureFile)  // the golden bundle predates fixtures: still a valid manifest
        var m = try JSON.parse(try Data(contentsOf: repoRoot.appendingPathComponent(
            "tests/golden/bundle/manifest.json"))).objectValue!
        var record = JSONObject()
        record["file"] = .string("reference_fixture.json")
        record["reference"] = .string("fp32")
        record["top_k"] = .number(JSONNumber(8))
        record["cases"] = .number(JSONNumber(3))
        record["steps"] = .number(JSONNumber(93))
        m["fixture"] = .object(record)
        XCTAssertEqual(try BundleManifest.parse(Data(JSONValue.object(m).pretty(indent: 2).utf8)).fixtureFile,
                       "reference_fixture.json")
        record["top_k"] = .number(JSONNumber(1))  // the schema's bound
        m["fixture"] = .object(record)
        XCTAssertThrowsError(try BundleManifest.parse(Data(JSONValue.object(m).pretty(indent: 2).utf8)))
    }

    func testAMalformedFixtureIsRefused() throws {
        let (manifest, _, fixture) = try inputs()
        XCTAssertThrowsError(try FixtureCheck.run(manifest: manifest, fixture: Data(#"{"format": "other"}"#.utf8),
                                                  model: ReplayModel(fixture: fixture, vocab: manifest.vocabSize)))
    }
}
