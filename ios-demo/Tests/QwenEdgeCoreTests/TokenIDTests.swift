import Foundation
import XCTest
@testable import QwenEdgeCore

/// A model that records every call and whose logits (`width` of them) always point at `next`.
final class RecordingModel: LanguageModel {
    let width: Int, next: Int
    private(set) var calls: [String] = []
    private(set) var position = 0
    let maxSeqLen = 64

    init(width: Int, next: Int) { (self.width, self.next) = (width, next) }

    private func logits() -> [Float] {
        var out = [Float](repeating: 0, count: width)
        out[next] = 1
        return out
    }

    func prefill(_ tokens: [Int]) throws -> [Float] { calls.append("prefill"); position += tokens.count; return logits() }
    func decode(_ token: Int) throws -> [Float] { calls.append("decode \(token)"); position += 1; return logits() }
    func reset() { calls.append("reset"); position = 0 }
}

/// No token id past the embedding's rows reaches a backend (ExecuTorch segfaults on one): the generation loop refuses
/// such a prompt or stop-thinking id before the model sees anything and never feeds such a sampled id back, and the
/// verifier refuses a manifest whose special or stop-thinking ids are past architecture.vocab_size.
final class TokenIDTests: XCTestCase {
    let vocab = 16
    let special = SpecialTokens(imStart: 1, imEnd: 2, thinkOpen: 3, thinkClose: 4, endOfText: 0, eos: [2, 0])

    func generate(_ generator: Generator, _ model: RecordingModel, _ prompt: [Int]) throws -> Generator.Result {
        var sampler = Sampler(.greedy)
        return try generator.run(model, prompt: prompt, thinking: false, budget: nil, maxNewTokens: 4,
                                 sampler: &sampler)
    }

    func testAPromptIDPastTheVocabularyIsRefusedBeforeTheModelSeesAnything() throws {
        let generator = Generator(special: special, stopThinkingIds: [5, 4], vocabSize: vocab)
        for bad in [vocab, vocab + 1, 50_000_000, -1] {
            let model = RecordingModel(width: vocab, next: 7)
            XCTAssertThrowsError(try generate(generator, model, [1, 9, bad, 2])) { error in
                let message = "\(error)"
                XCTAssertTrue(error is Generator.TokenOutOfRange, message)
                XCTAssertTrue(message.contains("token id \(bad)") && message.contains("\(vocab) embedding rows"),
                              message)
            }
            XCTAssertEqual(model.calls, [])
        }
        let good = RecordingModel(width: vocab, next: 7)
        XCTAssertEqual(try generate(generator, good, [1, 9, vocab - 1, 2]).tokenIds, [7, 7, 7, 7])
        XCTAssertEqual(good.calls, ["reset", "prefill", "decode 7", "decode 7", "decode 7"])
    }

    func testAStopThinkingIDPastTheVocabularyIsRefusedBeforeTheModelSeesAnything() {
        let generator = Generator(special: special, stopThinkingIds: [5, vocab, 4], vocabSize: vocab)
        let model = RecordingModel(width: vocab, next: 7)
        XCTAssertThrowsError(try generate(generator, model, [1, 9, 2])) { error in
            XCTAssertTrue("\(error)".contains("stop-thinking"), "\(error)")
        }
        XCTAssertEqual(model.calls, [])
    }

    func testASampledIDPastTheVocabularyIsNeverFedBack() {
        // logits wider than the embedding (a padded output) whose best column is past its rows
        let generator = Generator(special: special, stopThinkingIds: [5, 4], vocabSize: vocab)
        let model = RecordingModel(width: vocab + 8, next: vocab + 3)
        XCTAssertThrowsError(try generate(generator, model, [1, 9, 2])) { error in
            XCTAssertTrue("\(error)".contains("token id \(vocab + 3)"), "\(error)")
        }
        XCTAssertEqual(model.calls, ["reset", "prefill"])
    }

    /// The verifier's report on the fixture bundle with `pointer` set to `value` (the digest rewritten).
    func tampered(_ pointer: String, _ value: Int) throws -> BundleVerifier.Report {
        let bundle = try TamperTable.copyFixture(try TamperTable.load())
        defer { try? FileManager.default.removeItem(at: bundle.deletingLastPathComponent()) }
        let step = try JSON.parse(Data("{\"op\": \"set\", \"pointer\": \"\(pointer)\", \"value\": \(value)}".utf8))
        try TamperTable.run(step, in: bundle)
        return BundleVerifier.verify(bundle)
    }

    func testTheVerifierRefusesSpecialIDsPastVocabSize() throws {
        let vocab = try XCTUnwrap(BundleVerifier.verify(repoRoot.appendingPathComponent("tests/golden/bundle"))
            .manifest).vocabSize
        let cases: [(String, Int, String)] = [
            ("/special_tokens/im_end", vocab, "special_tokens.im_end \(vocab)"),
            ("/special_tokens/think_open", 50_000_000, "special_tokens.think_open 50000000"),
            ("/special_tokens/eos/0", vocab + 1, "special_tokens.eos \(vocab + 1)"),
            ("/thinking/stop_token_ids/0", vocab, "thinking.stop_token_ids \(vocab)"),
        ]
        for (pointer, value, expected) in cases {
            let report = try tampered(pointer, value)
            XCTAssertEqual(report.problems.map(\.code), [.schema], pointer)
            let message = report.problems.first?.message ?? ""
            XCTAssertTrue(message.contains(expected) && message.contains("vocab_size \(vocab)"), message)
            XCTAssertNil(report.manifest, pointer)
        }
        XCTAssertTrue(try tampered("/special_tokens/im_end", vocab - 1).ok)
    }
}
