import Foundation
import XCTest
@testable import QwenEdgeCore

/// Replays tests/golden/sampling.json, written by the Python runtime (python -m tools.golden --sampling-out): the same
/// seed and logits pick the same tokens, SplitMix64 gives the same outputs, and the per-mode defaults match.
final class SamplingTests: XCTestCase {
    func golden() throws -> JSONObject {
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/sampling.json"))
        return try JSON.parse(data).objectValue!
    }

    func params(_ p: JSONValue) -> SamplingParams {
        SamplingParams(temperature: p["temperature"]!.numberValue!.value, topK: p["top_k"]!.intValue!,
                       topP: p["top_p"]!.numberValue!.value, minP: p["min_p"]!.numberValue!.value,
                       repetitionPenalty: p["repetition_penalty"]!.numberValue!.value,
                       presencePenalty: p["presence_penalty"]!.numberValue!.value)
    }

    func seed(_ value: JSONValue?) -> UInt64 { value?.stringValue.flatMap { UInt64($0, radix: 16) } ?? 0 }

    func testSeededDecisionsMatchThePythonRuntime() throws {
        let cases = try golden()["cases"]!.arrayValue!
        XCTAssertEqual(cases.count, 8)
        for c in cases {
            var sampler = Sampler(params(c["params"]!), seed: seed(c["params"]!["seed"]))
            let prompt = c["prompt_ids"]!.arrayValue!.map { $0.intValue! }
            var generated: [Int] = []
            for step in c["logits"]!.arrayValue! {
                let logits = step.arrayValue!.map { Float($0.numberValue!.value) }
                generated.append(sampler.sample(logits, prompt: prompt, generated: generated))
            }
            XCTAssertEqual(generated, c["chosen"]!.arrayValue!.map { $0.intValue! }, c["name"]!.stringValue!)
        }
    }

    func testSplitMix64MatchesThePythonRuntime() throws {
        for entry in try golden()["splitmix64"]!.arrayValue! {
            var outputs = SplitMix(state: seed(entry["seed"]))
            for hex in entry["next_u64"]!.arrayValue! {
                XCTAssertEqual(outputs.next(), UInt64(hex.stringValue!, radix: 16)!)
            }
            var draws = SplitMix(state: seed(entry["seed"]))
            for value in entry["next_float"]!.arrayValue! {
                XCTAssertEqual(draws.nextDouble(), value.numberValue!.value)
            }
        }
    }

    func testDefaultsByModeMatchThePythonRuntime() throws {
        for c in try golden()["defaults"]!.arrayValue! {
            guard case .bool(let thinking)? = c["thinking"] else { return XCTFail("thinking is not a boolean") }
            let got = SamplingParams.forMode(c["generation_config"]!.objectValue!, thinking: thinking)
            XCTAssertEqual(got, params(c["params"]!), "\(c["name"]!.stringValue!) thinking \(thinking)")
            XCTAssertTrue(got.isValid)
        }
    }

    func testTheHardSwitchBeatsTheSoftOne() {
        let think = [Message(role: "user", content: "go /think")]
        XCTAssertFalse(ChatTemplate.thinks(think, budget: nil, enableThinking: false))
        XCTAssertTrue(ChatTemplate.thinks(think, budget: nil, enableThinking: true))
        XCTAssertFalse(ChatTemplate.thinks(think, budget: 0, enableThinking: true))
    }

    func testAnUnseededSamplerDrawsItsOwnSeed() {
        XCTAssertNotEqual(Sampler(.qwen3Thinking).seed, Sampler(.qwen3Thinking).seed)
    }
}
