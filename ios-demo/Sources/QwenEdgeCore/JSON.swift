import Foundation

/// A JSON number as written in the document (its text, kept so that a rewrite writes it back unchanged) and its
/// value. Two numbers are equal when their values are (1 == 1.0), as JSON Schema compares them.
public struct JSONNumber: Equatable, Sendable, CustomStringConvertible {
    public let text: String
    public let value: Double

    public init(text: String, value: Double) {
        (self.text, self.value) = (text, value)
    }

    public init(_ value: Int) {
        self.init(text: String(value), value: Double(value))
    }

    /// The value when it is a whole number that fits an Int (JSON Schema's "integer": 256 and 256.0 both are).
    public var integer: Int? {
        if let exact = Int(text) { return exact }
        guard value.rounded() == value, abs(value) < 9_007_199_254_740_992 else { return nil }
        return Int(value)
    }

    public var description: String { text }

    public static func == (a: JSONNumber, b: JSONNumber) -> Bool {
        if let x = a.integer, let y = b.integer { return x == y }
        return a.value == b.value
    }
}

/// A JSON object that keeps its keys in document order (a rewrite keeps the order the exporter wrote).
public struct JSONObject: Equatable, Sendable {
    public private(set) var keys: [String] = []
    private var values: [String: JSONValue] = [:]

    public init() {}

    public subscript(key: String) -> JSONValue? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var count: Int { keys.count }
    public var entries: [(key: String, value: JSONValue)] { keys.map { ($0, values[$0]!) } }

    /// Equal when they hold the same keys with equal values, in any order (as JSON objects compare).
    public static func == (a: JSONObject, b: JSONObject) -> Bool { a.values == b.values }
}

public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var numberValue: JSONNumber? { if case .number(let n) = self { return n } else { return nil } }
    /// A whole number (see JSONNumber.integer); never a boolean.
    public var intValue: Int? { numberValue?.integer }
    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// JSON Schema's name for the value's type ("integer" for whole numbers).
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number(let n): return n.integer != nil ? "integer" : "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

/// A strict RFC 8259 reader, the same on every platform (Foundation's JSONSerialization differs between Darwin
/// and Linux, and on Darwin reads `true` and `256.0` as valid Ints): UTF-8 only, no byte order mark, no leading
/// zeros (`01`), no bare fractions or exponents (`1.`, `.5`, `1e`), no number out of Double's range (`1E400`), no
/// NaN or Infinity, no trailing commas, no control characters in strings, no lone surrogates, no duplicate keys
/// (parsers disagree on which one wins), at most 128 levels of nesting.
public enum JSON {
    public static let maxDepth = 128

    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public let offset: Int
        public let reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    public static func parse(_ data: Data) throws -> JSONValue {
        let bytes = [UInt8](data)
        // Invalid UTF-8 decodes with replacement characters, so a round trip that changes the bytes means invalid.
        guard Array(String(decoding: bytes, as: UTF8.self).utf8) == bytes else {
            throw SyntaxError(offset: 0, reason: "not UTF-8")
        }
        var reader = Reader(bytes: bytes)
        reader.skipSpace()
        let value = try reader.value()
        reader.skipSpace()
        guard reader.at == bytes.count else { throw reader.error("trailing characters") }
        return value
    }

    public static func parse(_ text: String) throws -> JSONValue { try parse(Data(text.utf8)) }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0
        var depth = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func error(_ reason: String) -> SyntaxError { SyntaxError(offset: at, reason: reason) }

        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipSpace() {
            while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { at += 1 }
        }

        mutating func expect(_ c: UInt8, _ what: String) throws {
            guard peek == c else { throw error("expected \(what)") }
            at += 1
        }

        mutating func value() throws -> JSONValue {
            guard let c = peek else { throw error("unexpected end") }
            switch c {
            case UInt8(ascii: "{"): return try object()
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw error("unexpected character")
            }
        }

        mutating func literal(_ word: String, _ value: JSONValue) throws -> JSONValue {
            let w = Array(word.utf8)
            guard at + w.count <= bytes.count, Array(bytes[at..<at + w.count]) == w else { throw error("expected \(word)") }
            at += w.count
            return value
        }

        mutating func nest() throws {
            depth += 1
            if depth > JSON.maxDepth { throw error("nested deeper than \(JSON.maxDepth) levels") }
        }

        mutating func object() throws -> JSONValue {
            try nest()
            at += 1
            var object = JSONObject()
            skipSpace()
            if peek == UInt8(ascii: "}") {
                at += 1
                depth -= 1
                return .object(object)
            }
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw error("expected a key") }
                let keyAt = at
                let key = try string()
                guard object[key] == nil else { throw SyntaxError(offset: keyAt, reason: "duplicate key \"\(key)\"") }
                skipSpace()
                try expect(UInt8(ascii: ":"), ":")
                skipSpace()
                object[key] = try value()
                skipSpace()
                if peek == UInt8(ascii: ",") {
                    at += 1
                    continue
                }
                try expect(UInt8(ascii: "}"), ", or }")
                depth -= 1
                return .object(object)
            }
        }

        mutating func array() throws -> JSONValue {
            try nest()
            at += 1
            var items: [JSONValue] = []
            skipSpace()
            if peek == UInt8(ascii: "]") {
                at += 1
                depth -= 1
                return .array(items)
            }
            while true {
                skipSpace()
                items.append(try value())
                skipSpace()
                if peek == UInt8(ascii: ",") {
                    at += 1
                    continue
                }
                try expect(UInt8(ascii: "]"), ", or ]")
                depth -= 1
                return .array(items)
            }
        }

        mutating func digits() -> Int {
            let start = at
            while let c = peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { at += 1 }
            return at - start
        }

        /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and nothing else; the caller rejects what follows.
        mutating func number() throws -> JSONNumber {
            let start = at
            if peek == UInt8(ascii: "-") { at += 1 }
            if peek == UInt8(ascii: "0") {
                at += 1
                if let c = peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { throw error("leading zero") }
            } else if digits() == 0 {
                throw error("expected a digit")
            }
            if peek == UInt8(ascii: ".") {
                at += 1
                guard digits() > 0 else { throw error("expected a digit after the decimal point") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                at += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard digits() > 0 else { throw error("expected a digit in the exponent") }
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            guard let value = Double(text), value.isFinite else {
                throw SyntaxError(offset: start, reason: "number \(text) is out of range")
            }
            return JSONNumber(text: text, value: value)
        }

        mutating func hex4() throws -> UInt16 {
            guard at + 4 <= bytes.count,
                  let v = UInt16(String(decoding: bytes[at..<at + 4], as: UTF8.self), radix: 16),
                  bytes[at..<at + 4].allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "-") }) else {
                throw error("bad \\u escape")
            }
            at += 4
            return v
        }

        mutating func string() throws -> String {
            at += 1
            var out: [UInt8] = []
            while true {
                guard let c = peek else { throw error("unterminated string") }
                at += 1
                if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if c < 0x20 { throw error("control character in a string") }
                if c != UInt8(ascii: "\\") {
                    out.append(c)
                    continue
                }
                guard let e = peek else { throw error("unterminated string") }
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = UInt32(try hex4())
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard peek == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else {
                            throw error("lone surrogate")
                        }
                        at += 2
                        let low = UInt32(try hex4())
                        guard (0xDC00..<0xE000).contains(low) else { throw error("lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw error("lone surrogate")
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default:
                    throw error("bad escape")
                }
            }
        }
    }
}

public extension JSONValue {
    /// The text Python's json.dumps(value, indent=2, ensure_ascii=False) writes (the exporter's manifest format),
    /// numbers as they were read.
    func pretty(indent: Int = 2) -> String {
        var out = ""
        write(into: &out, level: 0, indent: indent)
        return out
    }

    private func write(into out: inout String, level: Int, indent: Int) {
        let pad = String(repeating: " ", count: (level + 1) * indent)
        let close = String(repeating: " ", count: level * indent)
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n.text
        case .string(let s): out += JSONValue.quote(s)
        case .array(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += pad
                item.write(into: &out, level: level + 1, indent: indent)
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += close + "]"
        case .object(let object):
            if object.count == 0 {
                out += "{}"
                return
            }
            out += "{\n"
            for (i, entry) in object.entries.enumerated() {
                out += pad + JSONValue.quote(entry.key) + ": "
                entry.value.write(into: &out, level: level + 1, indent: indent)
                out += i == object.count - 1 ? "\n" : ",\n"
            }
            out += close + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
