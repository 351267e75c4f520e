import Foundation

/// One tool call: the function's name and its arguments.
public struct ToolCall: Equatable, Sendable {
    public let name: String
    public let arguments: JSONObject

    /// The arguments as one line of JSON, as OpenAI's API carries them (strings keep their newlines escaped, so
    /// dropping the layout's line breaks changes no value).
    public var argumentsJSON: String {
        JSONValue.object(arguments).pretty(indent: 0).replacingOccurrences(of: "\n", with: "")
    }
}

/// A block that is not a call: its kind (unclosed, invalid_json, not_object, missing_name, bad_arguments) and the
/// block as the model wrote it (left in the content too).
public struct ToolCallError: Equatable, Sendable {
    public let kind: String
    public let raw: String
}

/// What a model's output parses to.
public struct ParsedOutput: Equatable, Sendable {
    public let content: String
    public let reasoning: String
    public let toolCalls: [ToolCall]
    public let errors: [ToolCallError]
}

/// Qwen3's tool calls read out of a model's output, mirroring runtimes/tool_calls.py rule for rule (both replay
/// tests/golden/tool_calls.json): the reasoning inside `<think>`, then each `<tool_call>` block holding a strict
/// JSON object with a non-empty "name" and an object "arguments" (absent means empty). A block that breaks a rule
/// stays in the content verbatim and is reported as a ToolCallError; parsing never throws. The search runs on UTF-8
/// bytes (the markers are ASCII), so no Unicode equivalence can move a boundary.
public enum ToolCallParser {
    static let thinkOpen = Array("<think>".utf8), thinkClose = Array("</think>".utf8)
    static let callOpen = Array("<tool_call>".utf8), callClose = Array("</tool_call>".utf8)

    static func find(_ needle: [UInt8], in bytes: [UInt8], from start: Int = 0, last: Bool = false) -> Int? {
        guard needle.count <= bytes.count, start <= bytes.count - needle.count else { return nil }
        let candidates = Array(start...(bytes.count - needle.count))
        for i in last ? candidates.reversed() : candidates where bytes[i..<(i + needle.count)].elementsEqual(needle) {
            return i
        }
        return nil
    }

    static func text(_ bytes: ArraySlice<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }

    static func strip(_ bytes: ArraySlice<UInt8>, _ set: Set<UInt8>) -> ArraySlice<UInt8> {
        var out = bytes
        while let first = out.first, set.contains(first) { out = out.dropFirst() }
        while let last = out.last, set.contains(last) { out = out.dropLast() }
        return out
    }

    static let newline: Set<UInt8> = [0x0A]
    static let trimmed: Set<UInt8> = [0x20, 0x09, 0x0D, 0x0A]

    /// Parses a raw output, think block included.
    public static func parse(_ output: String) -> ParsedOutput {
        let bytes = Array(output.utf8)
        if let close = find(thinkClose, in: bytes) {
            let before = Array(bytes[..<close])
            let opened = find(thinkOpen, in: before, last: true)
            let reasoning = opened.map { before[($0 + thinkOpen.count)...] } ?? before[...]
            let rest = Array(opened.map { before[..<$0] } ?? []) + Array(bytes[(close + thinkClose.count)...])
            return parse(answer: text(rest[...]), reasoning: text(strip(reasoning, newline)))
        }
        if let opened = find(thinkOpen, in: bytes) {
            return parse(answer: text(bytes[..<opened]),
                         reasoning: text(strip(bytes[(opened + thinkOpen.count)...], newline)))
        }
        return parse(answer: output, reasoning: "")
    }

    /// Parses an answer whose reasoning was already split off (the Generator keeps them apart).
    public static func parse(answer: String, reasoning: String) -> ParsedOutput {
        let bytes = Array(answer.utf8)
        var content: [UInt8] = []
        var calls: [ToolCall] = []
        var errors: [ToolCallError] = []
        var position = 0
        while true {
            guard let start = find(callOpen, in: bytes, from: position) else {
                content += bytes[position...]
                break
            }
            content += bytes[position..<start]
            let bodyStart = start + callOpen.count
            let end = find(callClose, in: bytes, from: bodyStart)
            let reopened = find(callOpen, in: bytes, from: bodyStart)
            if end == nil || (reopened != nil && reopened! < end!) {
                let stop = reopened ?? bytes.count
                errors.append(ToolCallError(kind: "unclosed", raw: text(bytes[start..<stop])))
                content += bytes[start..<stop]
                position = stop
                continue
            }
            let after = end! + callClose.count
            switch call(bytes[bodyStart..<end!]) {
            case .success(let found):
                calls.append(found)
            case .failure(let kind):
                errors.append(ToolCallError(kind: kind.kind, raw: text(bytes[start..<after])))
                content += bytes[start..<after]
            }
            position = after
        }
        return ParsedOutput(content: text(strip(content[...], trimmed)), reasoning: reasoning, toolCalls: calls,
                            errors: errors)
    }

    struct Kind: Error { let kind: String }

    /// The call in one block's body, or the kind of its error.
    static func call(_ body: ArraySlice<UInt8>) -> Result<ToolCall, Kind> {
        guard let value = try? JSON.parse(Data(strip(body, trimmed))) else { return .failure(Kind(kind: "invalid_json")) }
        guard let object = value.objectValue else { return .failure(Kind(kind: "not_object")) }
        guard let name = object["name"]?.stringValue, !name.isEmpty else { return .failure(Kind(kind: "missing_name")) }
        guard let map = (object["arguments"] ?? .object(JSONObject())).objectValue else {
            return .failure(Kind(kind: "bad_arguments"))
        }
        return .success(ToolCall(name: name, arguments: map))
    }
}
