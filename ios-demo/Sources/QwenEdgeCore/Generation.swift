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

/// Greedy (temperature 0) or temperature / top-k / top-p sampling with a seeded generator.
public struct Sampler: Sendable {
    public var temperature: Float = 0
    public var topK = 0
    public var topP: Float = 1
    var rng: SplitMix

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        (self.temperature, self.topK, self.topP, self.rng) = (temperature, topK, topP, SplitMix(state: seed))
    }

    public static func argmax(_ logits: [Float]) -> Int {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        return best
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        guard temperature > 0 else { return Self.argmax(logits) }
        let scaled = logits.map { Double($0 / temperature) }
        let top = scaled.max() ?? 0
        var probs = scaled.map { exp($0 - top) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        var order = Array(probs.indices).sorted { probs[$0] > probs[$1] }
        if topK > 0 { order = Array(order.prefix(topK)) }
        var kept: [Int] = []
        var cumulative = 0.0
        for i in order {
            kept.append(i)
            cumulative += probs[i]
            if cumulative >= Double(topP) { break }
        }
        var r = Double(rng.next() >> 11) / Double(1 << 53) * cumulative
        for i in kept {
            r -= probs[i]
            if r <= 0 { return i }
        }
        return kept.last!
    }
}

struct SplitMix: Sendable {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
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

    public let special: SpecialTokens
    public let stopThinkingIds: [Int]

    public init(special: SpecialTokens, stopThinkingIds: [Int]) {
        self.special = special
        self.stopThinkingIds = stopThinkingIds
    }

    /// `onToken(channel, id, forced)`: channel is "reasoning" or "content".
    public func run(_ model: LanguageModel, prompt: [Int], thinking: Bool, budget: Int?, maxNewTokens: Int,
                    sampler: inout Sampler, onToken: ((String, Int, Bool) -> Void)? = nil) throws -> Result {
        precondition(maxNewTokens >= 1, "maxNewTokens must be >= 1")
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
            let token = forced ?? sampler.sample(logits)
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
