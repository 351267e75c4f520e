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

    /// Whether a turn thinks: soft switches, the app's toggle, and budget 0 (which means no thinking).
    public static func thinks(_ messages: [Message], budget: Int?, enableThinking: Bool) -> Bool {
        thinkingRequested(messages, default: enableThinking) && budget != 0
    }
}
