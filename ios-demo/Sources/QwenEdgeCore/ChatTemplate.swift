import Foundation

/// One chat turn; `reasoning` is the assistant's thinking when kept apart from `content`.
public struct Message: Equatable, Sendable {
    public var role: String
    public var content: String
    public var reasoning: String?

    public init(role: String, content: String, reasoning: String? = nil) {
        self.role = role
        self.content = content
        self.reasoning = reasoning
    }
}

public enum ChatError: Error, Equatable, Sendable {
    case badMessage(String)
    case empty
}

/// Qwen3's chat template, mirroring runtimes/chat.py (checked against the golden vectors the Python runtime
/// writes): system turn, earlier assistant reasoning dropped, the empty think block when thinking is off, and
/// the /think and /no_think soft switches.
public enum ChatTemplate {
    static func isToolResponse(_ content: String) -> Bool {
        content.hasPrefix("<tool_response>") && content.hasSuffix("</tool_response>")
    }

    static func stripLeadingNewlines(_ s: String) -> String { String(s.drop(while: { $0 == "\n" })) }

    static func stripTrailingNewlines(_ s: String) -> String {
        var out = Substring(s)
        while out.last == "\n" { out = out.dropLast() }
        return String(out)
    }

    /// (reasoning, answer) of an assistant message that carries its think block inline.
    static func splitReasoning(_ content: String) -> (String, String) {
        let parts = content.components(separatedBy: "</think>")
        guard parts.count > 1 else { return ("", content) }
        let answer = stripLeadingNewlines(parts[parts.count - 1])
        let before = stripTrailingNewlines(parts[0])
        let reasoning = stripLeadingNewlines(before.components(separatedBy: "<think>").last ?? before)
        return (reasoning, answer)
    }

    public static func render(_ messages: [Message], addGenerationPrompt: Bool = true,
                              enableThinking: Bool = true) throws -> String {
        guard !messages.isEmpty else { throw ChatError.empty }
        for m in messages where !["system", "user", "assistant", "tool"].contains(m.role) {
            throw ChatError.badMessage(m.role)
        }
        var out = ""
        if messages[0].role == "system" { out += "<|im_start|>system\n\(messages[0].content)<|im_end|>\n" }
        var lastQuery = messages.count - 1
        for index in stride(from: messages.count - 1, through: 0, by: -1)
        where messages[index].role == "user" && !isToolResponse(messages[index].content) {
            lastQuery = index
            break
        }
        for (index, m) in messages.enumerated() {
            var content = m.content
            if m.role == "user" || (m.role == "system" && index > 0) {
                out += "<|im_start|>\(m.role)\n\(content)<|im_end|>\n"
            } else if m.role == "assistant" {
                var reasoning: String
                if let kept = m.reasoning {
                    reasoning = kept
                } else {
                    (reasoning, content) = splitReasoning(content)
                }
                if index > lastQuery && (index == messages.count - 1 || !reasoning.isEmpty) {
                    reasoning = stripTrailingNewlines(stripLeadingNewlines(reasoning))
                    out += "<|im_start|>assistant\n<think>\n\(reasoning)\n</think>\n\n\(stripLeadingNewlines(content))"
                } else {
                    out += "<|im_start|>assistant\n\(content)"
                }
                out += "<|im_end|>\n"
            } else if m.role == "tool" {
                if index == 0 || messages[index - 1].role != "tool" { out += "<|im_start|>user" }
                out += "\n<tool_response>\n\(content)\n</tool_response>"
                if index == messages.count - 1 || messages[index + 1].role != "tool" { out += "<|im_end|>\n" }
            }
        }
        if addGenerationPrompt {
            out += "<|im_start|>assistant\n"
            if !enableThinking { out += "<think>\n\n</think>\n\n" }
        }
        return out
    }

    /// User text stays text (as runtimes/chat.py, replaying tests/golden/user_text.json): every special-token string
    /// (the tokenizer's added tokens) inside user and tool content gets `textMark`, a Unicode noncharacter, after its
    /// first character, so the template never sees it; `encodingChunks` then cuts the rendered prompt there. Works
    /// on Unicode scalars, as Python's str and Java's String index (no grapheme clustering moves a boundary).
    public static let textMark = Unicode.Scalar(UInt32(0xFDD0))!  // (a literal cannot spell a noncharacter)

    static func longestFirst(_ specialTokens: [String]) -> [[Unicode.Scalar]] {
        var seen = Set<String>()
        let unique = specialTokens.filter { $0.unicodeScalars.count > 1 && seen.insert($0).inserted }
        return unique.map { Array($0.unicodeScalars) }.sorted { $0.count > $1.count }
    }

    static func match(_ text: [Unicode.Scalar], at i: Int, _ sorted: [[Unicode.Scalar]]) -> [Unicode.Scalar]? {
        sorted.first { i + $0.count <= text.count && text[i..<(i + $0.count)].elementsEqual($0) }
    }

    /// `messages` with every special-token string in user and tool content broken by `textMark`.
    public static func userTextAsText(_ messages: [Message], specialTokens: [String]) -> [Message] {
        let sorted = longestFirst(specialTokens)
        return messages.map { m in
            guard m.role == "user" || m.role == "tool" else { return m }
            let text = Array(m.content.unicodeScalars)
            var out = String.UnicodeScalarView()
            var i = 0
            while i < text.count {
                if let token = match(text, at: i, sorted) {
                    out.append(token[0])
                    out.append(textMark)
                    out.append(contentsOf: token[1...])
                    i += token.count
                } else {
                    out.append(text[i])
                    i += 1
                }
            }
            return Message(role: m.role, content: String(out), reasoning: m.reasoning)
        }
    }

    /// A prompt rendered from userTextAsText's messages, cut where a special-token string was marked, the marks
    /// dropped: the app's tokenizer encodes the chunks one by one, so only the template's control tokens are special.
    public static func encodingChunks(_ rendered: String, specialTokens: [String]) -> [String] {
        let marked = longestFirst(specialTokens).map { [$0[0], textMark] + $0[1...] }
        let text = Array(rendered.unicodeScalars)
        var chunks: [String] = []
        var start = 0, i = 0
        func chunk(_ a: Int, _ b: Int) -> String {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text[a..<b])
            return String(view)
        }
        while i < text.count {
            guard let token = match(text, at: i, marked) else { i += 1; continue }
            chunks.append(chunk(start, i + 1))
            start = i + 2
            i += token.count
        }
        chunks.append(chunk(start, text.count))
        return chunks.filter { !$0.isEmpty }
    }

    /// Qwen3's soft switches: the last /think or /no_think in the user turns wins.
    public static func thinkingRequested(_ messages: [Message], default mode: Bool = true) -> Bool {
        var mode = mode
        let pattern = try! NSRegularExpression(pattern: "/(no_think|think)\\b")
        for m in messages where m.role == "user" {
            let range = NSRange(m.content.startIndex..., in: m.content)
            for match in pattern.matches(in: m.content, range: range) {
                if let r = Range(match.range(at: 1), in: m.content) { mode = m.content[r] == "think" }
            }
        }
        return mode
    }

    /// Whether a turn thinks, as runtimes/generate.py thinking_mode: the hard switches (the app's toggle, budget 0)
    /// win over the soft ones, as in Qwen's template; with thinking on, the last /think or /no_think decides.
    public static func thinks(_ messages: [Message], budget: Int?, enableThinking: Bool) -> Bool {
        enableThinking && budget != 0 && thinkingRequested(messages)
    }
}
