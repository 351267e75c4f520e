import Foundation
import XCTest
@testable import QwenEdgeCore

/// The strict JSON reader and the shipped schema.
final class JSONTests: XCTestCase {
    func testRejectsWhatRFC8259Forbids() {
        let bad = ["01", "-01", "1.", ".5", "1e", "1E+", "+1", "1E400", "-1e999", "NaN", "Infinity", "[1,]", "{\"a\": 1,}",
                   "{\"a\" 1}", "{a: 1}", "'a'", "\"\\q\"", "\"\\u12\"", "\"\\ud800\"", "\"a\u{01}b\"", "[1] 2", "nul",
                   "", " ", "\u{FEFF}{}", "{\"a\": 1, \"a\": 2}", String(repeating: "[", count: 200) + String(repeating: "]", count: 200)]
        for text in bad {
            XCTAssertThrowsError(try JSON.parse(text), text)
        }
        XCTAssertThrowsError(try JSON.parse(Data([0x22, 0xC3, 0x28, 0x22])), "invalid UTF-8")
    }

    func testReadsWhatRFC8259Allows() throws {
        XCTAssertEqual(try JSON.parse(" [1, -0, 2.5, 1e-06, 1E+2, \"a\\nb\\u00e9\\ud83d\\ude00/\", true, false, null, {}] "),
                       .array([.number(JSONNumber(1)), .number(JSONNumber(0)), .number(JSONNumber(text: "2.5", value: 2.5)),
                               .number(JSONNumber(text: "1e-06", value: 1e-06)), .number(JSONNumber(100)),
                               .string("a\nbé😀/"), .bool(true), .bool(false), .null, .object(JSONObject())]))
        XCTAssertEqual(try JSON.parse("1e-400"), .number(JSONNumber(text: "1e-400", value: 0)))  // underflow is 0, as in Python
        let nested = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        XCTAssertNoThrow(try JSON.parse(nested))
    }

    func testIntegersAsJSONSchemaCountsThem() throws {
        XCTAssertEqual(try JSON.parse("256").intValue, 256)
        XCTAssertEqual(try JSON.parse("256.0").intValue, 256)
        XCTAssertEqual(try JSON.parse("2.56e2").intValue, 256)
        XCTAssertNil(try JSON.parse("2.5").intValue)
        XCTAssertNil(try JSON.parse("true").intValue)
        XCTAssertEqual(try JSON.parse("[1]"), try JSON.parse("[1.0]"))
    }

    func testKeepsKeyOrderAndNumberText() throws {
        let value = try JSON.parse("{\"b\": 1e-06, \"a\": 10000.0}")
        XCTAssertEqual(value.objectValue?.keys, ["b", "a"])
        XCTAssertEqual(value.pretty(), "{\n  \"b\": 1e-06,\n  \"a\": 10000.0\n}")
        XCTAssertEqual(JSONValue.string("\"\\\u{1b}é</think>").pretty(), "\"\\\"\\\\\\u001bé</think>\"")
    }

    /// The module's copy of the schema is the Python side's, byte for byte, and uses only keywords implemented here.
    func testShippedSchemaIsRuntimesSchema() throws {
        let python = try Data(contentsOf: repoRoot.appendingPathComponent("runtimes/manifest.schema.json"))
        let shipped = try Data(contentsOf: XCTUnwrap(Bundle.module.url(forResource: "manifest.schema",
                                                                         withExtension: "json")))
        XCTAssertEqual(shipped, python, "copy runtimes/manifest.schema.json to ios-demo/Sources/QwenEdgeCore/")
        var unknown: Set<String> = []
        func visit(_ value: JSONValue, schemaPosition: Bool) {
            switch value {
            case .object(let object):
                for (key, child) in object.entries {
                    if schemaPosition && !ManifestSchema.keywords.contains(key) && !ManifestSchema.annotations.contains(key) {
                        unknown.insert(key)
                    }
                    // children of properties / $defs are schemas; of const / enum / required are data
                    let childIsSchema = schemaPosition && ["items", "additionalProperties", "$ref"].contains(key)
                    if schemaPosition && (key == "properties" || key == "$defs") {
                        for (_, sub) in child.objectValue?.entries ?? [] { visit(sub, schemaPosition: true) }
                    } else if childIsSchema {
                        visit(child, schemaPosition: true)
                    }
                }
            default:
                break
            }
        }
        visit(ManifestSchema.shipped.root, schemaPosition: true)
        XCTAssertEqual(unknown, [])
    }

    func testSchemaErrorsNameThePath() throws {
        let fixture = repoRoot.appendingPathComponent("tests/golden/bundle/manifest.json")
        let good = try JSON.parse(Data(contentsOf: fixture))
        XCTAssertEqual(ManifestSchema.shipped.errors(good), [])
        guard case .object(var m) = good, case .object(var files)? = m["files"] else { return XCTFail("fixture") }
        files["model.bin"] = .object({ var e = JSONObject(); e["sha256"] = .string("x"); e["bytes"] = .number(JSONNumber(-1)); return e }())
        m["files"] = .object(files)
        m["max_seq_len"] = .string("512")
        let errors = ManifestSchema.shipped.errors(.object(m))
        XCTAssertTrue(errors.contains("max_seq_len: is not of type integer"), "\(errors)")
        XCTAssertTrue(errors.contains("files/model.bin/bytes: is less than the minimum of 0"), "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("files/model.bin/sha256: does not match") }, "\(errors)")
    }
}
