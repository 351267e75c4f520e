import Foundation

/// runtimes/manifest.schema.json (a byte-identical copy ships in this module; a test compares them) applied with
/// the part of JSON Schema draft 2020-12 that it uses: type, const, enum, required, properties,
/// additionalProperties, items, minItems, minProperties, minLength, pattern, minimum, exclusiveMinimum and
/// local $refs. A keyword outside that list fails validation, so a schema change this code does not know about
/// rejects manifests instead of waving them through.
public struct ManifestSchema: Sendable {
    public static let annotations: Set<String> = ["$schema", "$id", "title", "description", "$defs"]
    public static let keywords: Set<String> = [
        "type", "const", "enum", "required", "properties", "additionalProperties", "items", "minItems",
        "minProperties", "minLength", "pattern", "minimum", "exclusiveMinimum", "$ref",
    ]

    public let root: JSONValue

    public init(_ root: JSONValue) { self.root = root }

    /// The schema that ships with the module.
    public static let shipped: ManifestSchema = {
        guard let url = Bundle.module.url(forResource: "manifest.schema", withExtension: "json"),
              let data = try? Data(contentsOf: url), let root = try? JSON.parse(data) else {
            fatalError("QwenEdgeCore's resource manifest.schema.json is missing or not JSON")
        }
        return ManifestSchema(root)
    }()

    /// Every way `instance` breaks the schema, as "path: message" lines (empty when valid).
    public func errors(_ instance: JSONValue) -> [String] {
        var out: [String] = []
        check(instance, root, "(root)", &out)
        return out
    }

    private func resolve(_ ref: String) -> JSONValue? {
        guard ref.hasPrefix("#/") else { return nil }
        var node: JSONValue? = root
        for part in ref.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
            node = node?[String(part).replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")]
        }
        return node
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object),
             ("number", .number): return true
        case ("integer", .number(let n)): return n.integer != nil
        default: return false
        }
    }

    private func check(_ value: JSONValue, _ schema: JSONValue, _ path: String, _ out: inout [String]) {
        guard let rules = schema.objectValue else {
            if case .bool(false) = schema { out.append("\(path): is not allowed") }
            return
        }
        let child = { (key: String) in path == "(root)" ? key : "\(path)/\(key)" }
        for (keyword, rule) in rules.entries {
            switch keyword {
            case _ where Self.annotations.contains(keyword):
                continue
            case "$ref":
                guard let ref = rule.stringValue, let target = resolve(ref) else {
                    out.append("\(path): unresolvable $ref")
                    continue
                }
                check(value, target, path, &out)
            case "type":
                let types = rule.arrayValue?.compactMap(\.stringValue) ?? [rule.stringValue ?? ""]
                if !types.contains(where: { Self.matches(value, type: $0) }) {
                    out.append("\(path): is not of type \(types.joined(separator: ", "))")
                }
            case "const":
                if value != rule { out.append("\(path): must be \(rule.pretty())") }
            case "enum":
                if !(rule.arrayValue ?? []).contains(value) { out.append("\(path): is not one of \(rule.pretty(indent: 0))") }
            case "required":
                guard let object = value.objectValue else { continue }
                for key in (rule.arrayValue ?? []).compactMap(\.stringValue) where object[key] == nil {
                    out.append("\(path): '\(key)' is a required property")
                }
            case "properties":
                guard let object = value.objectValue, let properties = rule.objectValue else { continue }
                for (key, sub) in properties.entries { if let v = object[key] { check(v, sub, child(key), &out) } }
            case "additionalProperties":
                guard let object = value.objectValue else { continue }
                let known = rules["properties"]?.objectValue
                for (key, v) in object.entries where known?[key] == nil { check(v, rule, child(key), &out) }
            case "items":
                guard let items = value.arrayValue else { continue }
                for (i, item) in items.enumerated() { check(item, rule, child(String(i)), &out) }
            case "minItems":
                if let items = value.arrayValue, items.count < (rule.intValue ?? 0) {
                    out.append("\(path): has fewer than \(rule.intValue ?? 0) items")
                }
            case "minProperties":
                if let object = value.objectValue, object.count < (rule.intValue ?? 0) {
                    out.append("\(path): has fewer than \(rule.intValue ?? 0) properties")
                }
            case "minLength":
                if let s = value.stringValue, s.unicodeScalars.count < (rule.intValue ?? 0) {
                    out.append("\(path): is shorter than \(rule.intValue ?? 0)")
                }
            case "pattern":
                guard let s = value.stringValue else { continue }
                guard let pattern = rule.stringValue, let regex = try? NSRegularExpression(pattern: pattern) else {
                    out.append("\(path): unusable pattern")
                    continue
                }
                if regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) == nil {
                    out.append("\(path): does not match \(pattern)")
                }
            case "minimum":
                if let n = value.numberValue, let bound = rule.numberValue, n.value < bound.value {
                    out.append("\(path): is less than the minimum of \(bound)")
                }
            case "exclusiveMinimum":
                if let n = value.numberValue, let bound = rule.numberValue, n.value <= bound.value {
                    out.append("\(path): is less than or equal to the minimum of \(bound)")
                }
            default:
                out.append("\(path): the schema uses \(keyword), which this app does not implement")
            }
        }
    }
}
