import Foundation

/// A bundle's reference fixture (reference_fixture.json, written by the exporter: runtimes/fixture.py) replayed
/// through the app's own LanguageModel, judged as `python -m exporter verify` judges it (FixtureCheck.java is the
/// Android twin). Each case runs as chat runs it (greedy, the case's thinking budget and answer limit, from the
/// fixture's prompt ids); where the tokens match the reference's, that run is the teacher-forced one, otherwise the
/// case runs again on the reference's tokens. Per step the model's argmax is compared with the reference's and its
/// logits on the reference's top-k ids with the reference's values. The criterion is the one the exporter recorded:
/// a bundle that computes what its reference computes must match greedily and stay within exact_tolerance; one
/// whose kernels round needs top-1 agreement of at least rounded_min_top1, or every disagreement at a near tie.
public enum FixtureCheck {
    public struct Malformed: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// What the check found; `summary` is the line an app shows.
    public struct Report: Sendable {
        public var passed = false
        public var criterion = ""
        public var cases = 0, steps = 0
        public var greedyMatch = true
        public var top1Agreement = 0.0
        public var maxAbsLogitDiffTopK = 0.0
        public var disagreements = 0
        /// The widest reference margin among the disagreements; nil when there are none.
        public var maxDisagreementMargin: Double?

        public var summary: String {
            "reference fixture \(passed ? "passed" : "FAILED") (\(criterion)): \(cases) prompts, \(steps) steps, "
                + "greedy match \(greedyMatch), top-1 agreement \(String(format: "%.4f", top1Agreement)), "
                + "max |dlogit| on the top-k \(String(format: "%.3g", maxAbsLogitDiffTopK)), "
                + "\(disagreements) disagreement(s)"
        }
    }

    /// A LanguageModel that keeps the logits it returned since its last reset.
    final class Recording: LanguageModel {
        let model: LanguageModel
        var logits: [[Float]] = []

        init(_ model: LanguageModel) { self.model = model }

        func prefill(_ tokens: [Int]) throws -> [Float] {
            let out = try model.prefill(tokens)
            logits.append(out)
            return out
        }

        func decode(_ token: Int) throws -> [Float] {
            let out = try model.decode(token)
            logits.append(out)
            return out
        }

        func reset() {
            model.reset()
            logits = []
        }

        var position: Int { model.position }
        var maxSeqLen: Int { model.maxSeqLen }
    }

    /// Runs the fixture's bytes through `model`; throws Malformed when the fixture cannot be read.
    public static func run(manifest: BundleManifest, fixture data: Data, model: LanguageModel) throws -> Report {
        func malformed(_ what: String) -> Malformed { Malformed(description: "reference fixture: \(what)") }
        func number(_ value: JSONValue?, _ what: String) throws -> Double {
            guard let n = value?.numberValue else { throw malformed("\(what) is not a number") }
            return n.value
        }
        func ids(_ value: JSONValue?, _ what: String) throws -> [Int] {
            guard let items = value?.arrayValue else { throw malformed("\(what) is not an array") }
            return try items.map { item in
                guard let id = item.intValue, id >= 0, id < manifest.vocabSize else {
                    throw malformed("\(what) holds an id outside the vocabulary")
                }
                return id
            }
        }
        let fixture: JSONValue
        do {
            fixture = try JSON.parse(data)
        } catch {
            throw malformed("not valid JSON (\(error))")
        }
        guard fixture["format"]?.stringValue == "qwen-edge-reference-fixture", fixture["version"]?.intValue == 1 else {
            throw malformed("not a version 1 qwen-edge-reference-fixture")
        }
        guard let criterion = fixture["criterion"], case .bool(let byAgreement)? = criterion["judged_by_agreement"]
        else { throw malformed("no criterion") }
        let tolerance = try number(criterion["exact_tolerance"], "exact_tolerance")
        let minTop1 = try number(criterion["rounded_min_top1"], "rounded_min_top1")
        let nearTie = try number(criterion["near_tie_margin"], "near_tie_margin")
        guard let cases = fixture["cases"]?.arrayValue, !cases.isEmpty else { throw malformed("no cases") }
        let generator = Generator(special: manifest.special, stopThinkingIds: manifest.stopThinkingIds,
                                  vocabSize: manifest.vocabSize)
        let recording = Recording(model)
        var report = Report()
        var agreed = 0
        var allNearTies = true
        for c in cases {
            let prompt = try ids(c["prompt_ids"], "prompt_ids")
            let expected = try ids(c["token_ids"], "token_ids")
            guard let steps = c["steps"]?.arrayValue, steps.count == expected.count, !expected.isEmpty,
                  let maxNewTokens = c["max_new_tokens"]?.intValue, maxNewTokens >= 1,
                  case .bool(let thinking)? = c["thinking"] else {
                throw malformed("a case is malformed (steps, tokens or limits)")
            }
            let budget = c["thinking_budget"]?.intValue
            var sampler = Sampler(.greedy)
            let result = try generator.run(recording, prompt: prompt, thinking: thinking, budget: budget,
                                           maxNewTokens: maxNewTokens, sampler: &sampler)
            let same = result.tokenIds == expected
            let rows = same ? recording.logits : try teacherForced(model, prompt: prompt, tokens: expected)
            report.greedyMatch = report.greedyMatch && same
            for (i, step) in steps.enumerated() {
                let top = try ids(step["top_ids"], "top_ids")
                guard let values = step["top_logits"]?.arrayValue, values.count == top.count, top.count >= 2 else {
                    throw malformed("a step's top_ids and top_logits differ in number")
                }
                let row = rows[i]
                for (j, id) in top.enumerated() {
                    let diff = abs(Double(row[id]) - (try number(values[j], "top_logits")))
                    report.maxAbsLogitDiffTopK = max(report.maxAbsLogitDiffTopK, diff)
                }
                if Sampler.argmax(row) == top[0] {
                    agreed += 1
                } else {
                    let margin = try number(step["margin"], "margin")
                    report.disagreements += 1
                    report.maxDisagreementMargin = max(report.maxDisagreementMargin ?? margin, margin)
                    allNearTies = allNearTies && margin <= nearTie
                }
            }
            report.cases += 1
            report.steps += expected.count
        }
        report.top1Agreement = Double(agreed) / Double(report.steps)
        if byAgreement {
            report.criterion = "top-1 agreement >= \(minTop1), or every disagreement at a near tie "
                + "(margin <= \(nearTie))"
            report.passed = report.top1Agreement >= minTop1 || allNearTies
        } else {
            report.criterion = "greedy match and max |dlogit| on the top-k <= \(tolerance)"
            report.passed = report.greedyMatch && report.maxAbsLogitDiffTopK <= tolerance
        }
        return report
    }

    /// The model's logits per step over the prompt and the reference's tokens: prefill, then one decode each.
    static func teacherForced(_ model: LanguageModel, prompt: [Int], tokens: [Int]) throws -> [[Float]] {
        model.reset()
        var rows = [try model.prefill(prompt)]
        for token in tokens.dropLast() { rows.append(try model.decode(token)) }
        return rows
    }
}
