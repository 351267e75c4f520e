import Foundation
import XCTest
@testable import QwenEdgeCore

/// The repository root, from this file's path (ios-demo/Tests/QwenEdgeCoreTests/…).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

func loadGolden() throws -> [String: Any] {
    let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/tiny.json"))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

/// A model whose logits at step k (k tokens after the prompt) point at the golden k-th generated token.
final class ScriptedModel: LanguageModel {
    let promptLength: Int, script: [Int], vocab: Int
    private(set) var position = 0
    let maxSeqLen = 512

    init(promptLength: Int, script: [Int], vocab: Int) {
        (self.promptLength, self.script, self.vocab) = (promptLength, script, vocab)
    }

    private func logits() -> [Float] {
        var out = [Float](repeating: 0, count: vocab)
        let step = position - promptLength
        if step < script.count { out[script[step]] = 1 }
        return out
    }

    func prefill(_ tokens: [Int]) throws -> [Float] { position += tokens.count; return logits() }
    func decode(_ token: Int) throws -> [Float] { position += 1; return logits() }
    func reset() { position = 0 }
}

final class GoldenTests: XCTestCase {
    func testRendersAndGeneratesExactlyAsThePythonRuntime() throws {
        let golden = try loadGolden()
        let ids = golden["special_ids"] as! [String: Int]
        let special = SpecialTokens(imStart: ids["im_start"]!, imEnd: ids["im_end"]!, thinkOpen: ids["think_open"]!,
                                    thinkClose: ids["think_close"]!, endOfText: ids["endoftext"]!,
                                    eos: [ids["im_end"]!, ids["endoftext"]!])
        let vocab = try BundleManifest.parse(Data(contentsOf: repoRoot.appendingPathComponent(
            "tests/golden/bundle/manifest.json"))).vocabSize
        let generator = Generator(special: special, stopThinkingIds: golden["stop_thinking_ids"] as! [Int],
                                  vocabSize: vocab)
        let cases = golden["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 8)
        var cut = 0
        for c in cases {
            let messages = (c["messages"] as! [[String: Any]]).map {
                Message(role: $0["role"] as! String, content: $0["content"] as! String,
                        reasoning: $0["reasoning_content"] as? String)
            }
            let budget = c["budget"] as? Int
            let thinking = ChatTemplate.thinks(messages, budget: budget, enableThinking: true)
            XCTAssertEqual(thinking, c["thinking"] as! Bool)
            XCTAssertEqual(try ChatTemplate.render(messages, enableThinking: thinking), c["prompt_text"] as! String)
            let prompt = c["prompt_ids"] as! [Int]
            let expected = c["generated_ids"] as! [Int]
            var sampler = Sampler(.greedy)
            let result = try generator.run(ScriptedModel(promptLength: prompt.count, script: expected, vocab: vocab),
                                           prompt: prompt, thinking: thinking, budget: budget,
                                           maxNewTokens: golden["max_new_tokens"] as! Int, sampler: &sampler)
            XCTAssertEqual(result.tokenIds, expected, "tokens of \(messages) budget \(String(describing: budget))")
            XCTAssertEqual(result.reasoningTokens, c["reasoning_tokens"] as! Int)
            XCTAssertEqual(result.stoppedByBudget, c["stopped_by_budget"] as! Bool)
            XCTAssertEqual(result.finishReason, c["finish_reason"] as! String)
            if result.stoppedByBudget { cut += 1 }
        }
        XCTAssertEqual(cut, 3)
    }

    func testStopIdsMatchTheFixtureManifest() throws {
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/bundle/manifest.json"))
        let manifest = try BundleManifest.parse(data)
        let golden = try loadGolden()
        XCTAssertEqual(manifest.stopThinkingIds, golden["stop_thinking_ids"] as! [Int])
        XCTAssertEqual(manifest.stopThinkingText, golden["stop_thinking_text"] as! String)
    }

    func testSoftSwitchesAndBudgetZero() throws {
        let noThink = [Message(role: "user", content: "What is 2 + 2? /no_think")]
        let backOn = [Message(role: "user", content: "a /no_think"), Message(role: "assistant", content: "b"),
                      Message(role: "user", content: "c /think")]
        XCTAssertFalse(ChatTemplate.thinks(noThink, budget: nil, enableThinking: true))
        XCTAssertTrue(ChatTemplate.thinks(backOn, budget: nil, enableThinking: true))
        XCTAssertFalse(ChatTemplate.thinks(backOn, budget: 0, enableThinking: true))
        XCTAssertTrue(try ChatTemplate.render(noThink, enableThinking: false).hasSuffix("<think>\n\n</think>\n\n"))
    }
}
