import Foundation

/// Qwen3's special token ids, read from a bundle's manifest (never literals).
public struct SpecialTokens: Equatable, Sendable {
    public var imStart, imEnd, thinkOpen, thinkClose, endOfText: Int
    public var eos: [Int]

    public init(imStart: Int, imEnd: Int, thinkOpen: Int, thinkClose: Int, endOfText: Int, eos: [Int]) {
        (self.imStart, self.imEnd, self.thinkOpen, self.thinkClose, self.endOfText, self.eos) =
            (imStart, imEnd, thinkOpen, thinkClose, endOfText, eos)
    }

    public func isStop(_ token: Int) -> Bool { eos.contains(token) || token == imEnd || token == endOfText }
}

/// Budget-capped thinking, mirroring runtimes/thinking.py: counts the tokens generated inside think; once
/// `budget` are spent without a close tag, hands back the stop-thinking ids (from the manifest) one per step.
public struct ThinkingBudget: Sendable {
    let budget: Int?
    let thinkOpen: Int, thinkClose: Int
    let stopIds: [Int]
    var forced: [Int] = []
    public internal(set) var inside = false
    var done = false
    public internal(set) var generated = 0
    public internal(set) var stoppedByBudget = false

    public init(budget: Int?, thinkOpen: Int, thinkClose: Int, stopIds: [Int]) {
        (self.budget, self.thinkOpen, self.thinkClose, self.stopIds) = (budget, thinkOpen, thinkClose, stopIds)
    }

    public mutating func forcedToken() -> Int? { forced.isEmpty ? nil : forced.removeFirst() }

    public mutating func observe(_ token: Int, forced wasForced: Bool) {
        if !inside {
            if token == thinkOpen && !done { inside = true }
            return
        }
        if token == thinkClose {
            inside = false
            done = true
            return
        }
        if wasForced { return }
        generated += 1
        if let budget, generated >= budget {
            stoppedByBudget = true
            forced = stopIds
        }
    }
}

/// What the generation loop needs from a backend (Core ML with MLState, or a test double).
public protocol LanguageModel: AnyObject {
    func prefill(_ tokens: [Int]) throws -> [Float]
    func decode(_ token: Int) throws -> [Float]
    func reset()
    var position: Int { get }
    var maxSeqLen: Int { get }
}

/// What to sample with: temperature 0 is greedy; topK 0, topP 1, minP 0 and the penalties' neutral values are off.
public struct SamplingParams: Equatable, Sendable {
    public var temperature = 0.0
    public var topK = 0
    public var topP = 1.0
    public var minP = 0.0
    public var repetitionPenalty = 1.0
    public var presencePenalty = 0.0

    public init(temperature: Double = 0, topK: Int = 0, topP: Double = 1, minP: Double = 0,
                repetitionPenalty: Double = 1, presencePenalty: Double = 0) {
        (self.temperature, self.topK, self.topP, self.minP, self.repetitionPenalty, self.presencePenalty) =
            (temperature, topK, topP, minP, repetitionPenalty, presencePenalty)
    }

    public static let greedy = SamplingParams()
    /// Qwen3's documented values (its model card); greedy is advised against in thinking mode.
    public static let qwen3Thinking = SamplingParams(temperature: 0.6, topK: 20, topP: 0.95)
    public static let qwen3NonThinking = SamplingParams(temperature: 0.7, topK: 20, topP: 0.8)
    public static let presencePenaltyMax = 2.0

    /// Whether every value is in range (as runtimes/sampling.py SamplingParams checks them).
    public var isValid: Bool {
        temperature >= 0 && temperature.isFinite && topK >= 0 && topP > 0 && topP <= 1 && minP >= 0 && minP < 1
            && repetitionPenalty > 0 && repetitionPenalty.isFinite && presencePenalty >= 0
            && presencePenalty <= Self.presencePenaltyMax
    }

    /// The defaults for the mode in effect, from a bundle's generation_config.json (an empty object without one), as
    /// SamplingParams.for_mode in Python: do_sample false is greedy; thinking takes the config's temperature, top_p,
    /// top_k and min_p (each missing one Qwen's documented thinking value); non-thinking takes Qwen's documented
    /// non-thinking values; the penalties come from the config in both modes.
    public static func forMode(_ config: JSONObject, thinking: Bool) -> SamplingParams {
        func number(_ key: String) -> Double? {
            if case .number(let n)? = config[key] { return n.value }
            return nil
        }
        var params: SamplingParams
        if case .bool(false)? = config["do_sample"] {
            params = .greedy
        } else if !thinking {
            params = .qwen3NonThinking
        } else {
            let d = qwen3Thinking
            params = SamplingParams(temperature: number("temperature") ?? d.temperature,
                                    topK: number("top_k").map { Int($0) } ?? d.topK, topP: number("top_p") ?? d.topP,
                                    minP: number("min_p") ?? d.minP)
        }
        params.repetitionPenalty = number("repetition_penalty") ?? 1
        params.presencePenalty = number("presence_penalty") ?? 0
        return params
    }
}

/// Choosing the next token, mirroring runtimes/sampling.py step for step (its docstring states the algorithm): a
/// repetition penalty over the prompt and the generated tokens, a presence penalty over the generated ones; greedy
/// at temperature 0; else candidates ordered by value (ties by lower id), top-k, softmax, min-p, top-p, and one draw
/// from SplitMix64. A seed gives the same tokens as the Python runtime and the Android core
/// (tests/golden/sampling.json).
public struct Sampler: Sendable {
    public let params: SamplingParams
    public let seed: UInt64
    var rng: SplitMix

    /// No seed: a fresh random one (read it from `seed` to reproduce the run).
    public init(_ params: SamplingParams, seed: UInt64? = nil) {
        let seed = seed ?? UInt64.random(in: .min ... .max)
        (self.params, self.seed, self.rng) = (params, seed, SplitMix(state: seed))
    }

    public static func argmax<T: Comparable>(_ values: [T]) -> Int {
        var best = 0
        for i in 1..<values.count where values[i] > values[best] { best = i }
        return best
    }

    /// `prompt`: the prompt's ids (repetition penalty only); `generated`: every token after the prompt so far.
    public mutating func sample(_ logits: [Float], prompt: [Int] = [], generated: [Int] = []) -> Int {
        var values = logits.map { Double($0) }
        if params.repetitionPenalty != 1 {
            for id in Set(prompt).union(generated) {
                values[id] = values[id] > 0 ? values[id] / params.repetitionPenalty : values[id] * params.repetitionPenalty
            }
        }
        if params.presencePenalty != 0 {
            for id in Set(generated) { values[id] -= params.presencePenalty }
        }
        guard params.temperature != 0 else { return Self.argmax(values) }
        return choose(values, draw: rng.nextDouble())
    }

    func choose(_ values: [Double], draw: Double) -> Int {
        let scaled = values.map { $0 / params.temperature }
        let order = Self.candidates(scaled, topK: params.topK)
        var probs = order.map { exp(scaled[$0] - scaled[order[0]]) }
        var total = 0.0
        for p in probs { total += p }
        probs = probs.map { $0 / total }
        var kept = probs.count
        if params.minP != 0 {
            let floor = params.minP * probs[0]
            kept = probs.reduce(0) { $1 >= floor ? $0 + 1 : $0 }
        }
        var running: [Double] = []
        var sum = 0.0
        for p in probs.prefix(kept) {
            sum += p
            running.append(sum)
        }
        if params.topP < 1, let reach = running.firstIndex(where: { $0 >= params.topP }) { kept = reach + 1 }
        let target = draw * running[kept - 1]
        return order[running.prefix(kept).firstIndex(where: { $0 > target }) ?? kept - 1]
    }

    /// Token ids by value, highest first, ties by lower id; the first topK of them when topK > 0.
    static func candidates(_ scaled: [Double], topK: Int) -> [Int] {
        guard topK > 0 && topK < scaled.count else {
            return scaled.indices.sorted { scaled[$0] != scaled[$1] ? scaled[$0] > scaled[$1] : $0 < $1 }
        }
        var best: [Int] = []
        best.reserveCapacity(topK)
        for id in scaled.indices {
            // ids come in increasing order, so an equal value never displaces an earlier id
            if best.count == topK {
                guard scaled[id] > scaled[best[topK - 1]] else { continue }
                best.removeLast()
            }
            var at = best.count
            while at > 0 && scaled[id] > scaled[best[at - 1]] { at -= 1 }
            best.insert(id, at: at)
        }
        return best
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): the same outputs as runtimes/sampling.py and the Android core.
struct SplitMix: Sendable {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits of the next output.
    mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// The generation loop over any LanguageModel, mirroring runtimes/generate.py.
public struct Generator: Sendable {
    public struct Result: Sendable {
        public var tokenIds: [Int] = []
        public var reasoningTokens = 0, forcedTokens = 0, contentTokens = 0
        public var stoppedByBudget = false
        public var thinking = false
        public var finishReason = "context"
        public var ttftMs = 0.0, prefillTokensPerS = 0.0, decodeTokensPerS = 0.0
    }

    /// A token id outside the model's embedding rows: fed to a backend it would read past the table (ExecuTorch
    /// crashes on one), so the loop refuses it first.
    public struct TokenOutOfRange: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let special: SpecialTokens
    public let stopThinkingIds: [Int]
    /// The embedding's rows (the manifest's architecture.vocab_size); no id outside 0..<vocabSize reaches the model.
    public let vocabSize: Int

    public init(special: SpecialTokens, stopThinkingIds: [Int], vocabSize: Int) {
        (self.special, self.stopThinkingIds, self.vocabSize) = (special, stopThinkingIds, vocabSize)
    }

    private func checkIDs(_ ids: [Int], _ what: String) throws {
        if let bad = ids.first(where: { !(0..<vocabSize).contains($0) }) {
            throw TokenOutOfRange(description: "\(what) holds token id \(bad), outside the model's \(vocabSize) "
                                  + "embedding rows: the tokenizer does not belong to this model")
        }
    }

    /// `onToken(channel, id, forced)`: channel is "reasoning" or "content".
    public func run(_ model: LanguageModel, prompt: [Int], thinking: Bool, budget: Int?, maxNewTokens: Int,
                    sampler: inout Sampler, onToken: ((String, Int, Bool) -> Void)? = nil) throws -> Result {
        precondition(maxNewTokens >= 1, "maxNewTokens must be >= 1")
        try checkIDs(prompt, "the prompt")
        try checkIDs(stopThinkingIds, "the stop-thinking text")
        var result = Result()
        result.thinking = thinking
        var controller = ThinkingBudget(budget: thinking ? budget : nil, thinkOpen: special.thinkOpen,
                                        thinkClose: special.thinkClose, stopIds: stopThinkingIds)
        if !thinking { controller.done = true }  // the prompt already holds the empty think block
        model.reset()
        let start = Date()
        var logits = try model.prefill(prompt)
        let prefillEnd = Date()
        var firstToken: Date?
        while model.position < model.maxSeqLen {
            let forced = controller.forcedToken()
            let token = forced ?? sampler.sample(logits, prompt: prompt, generated: result.tokenIds)
            guard (0..<vocabSize).contains(token) else {  // logits wider than the embedding (padded): never feed one
                throw TokenOutOfRange(description: "the model's \(logits.count) logits chose token id \(token), "
                                      + "outside its \(vocabSize) embedding rows")
            }
            if firstToken == nil { firstToken = Date() }
            result.tokenIds.append(token)
            let wasInside = controller.inside
            controller.observe(token, forced: forced != nil)
            if forced == nil && special.isStop(token) {
                result.finishReason = "stop"
                break
            }
            if token != special.thinkOpen && token != special.thinkClose {
                if forced != nil { result.forcedTokens += 1 } else if !wasInside { result.contentTokens += 1 }
                onToken?(wasInside ? "reasoning" : "content", token, forced != nil)
            }
            if result.contentTokens >= maxNewTokens {
                result.finishReason = "length"
                break
            }
            logits = try model.decode(token)
        }
        let end = Date()
        result.reasoningTokens = controller.generated
        result.stoppedByBudget = controller.stoppedByBudget
        result.ttftMs = (firstToken ?? end).timeIntervalSince(start) * 1000
        result.prefillTokensPerS = Double(prompt.count) / max(prefillEnd.timeIntervalSince(start), 1e-9)
        if let first = firstToken, end > first {
            result.decodeTokensPerS = Double(max(result.tokenIds.count - 1, 0)) / end.timeIntervalSince(first)
        }
        return result
    }
}
