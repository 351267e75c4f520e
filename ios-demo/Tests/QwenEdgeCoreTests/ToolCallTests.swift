import Foundation
import XCTest
@testable import QwenEdgeCore

/// Replays tests/golden/tool_calls.json, the cases runtimes/tool_calls.py and the Java core replay too.
final class ToolCallTests: XCTestCase {
    func testParsesEveryGoldenCaseAsThePythonRuntime() throws {
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/tool_calls.json"))
        let cases = try XCTUnwrap(JSON.parse(data)["cases"]?.arrayValue)
        XCTAssertGreaterThanOrEqual(cases.count, 12)
        var malformed = 0
        for c in cases {
            let name = c["name"]?.stringValue ?? "?"
            let parsed = ToolCallParser.parse(try XCTUnwrap(c["output"]?.stringValue))
            XCTAssertEqual(parsed.content, c["content"]?.stringValue, name)
            XCTAssertEqual(parsed.reasoning, c["reasoning"]?.stringValue, name)
            let calls = try XCTUnwrap(c["tool_calls"]?.arrayValue).map {
                ToolCall(name: $0["name"]!.stringValue!, arguments: $0["arguments"]!.objectValue!)
            }
            XCTAssertEqual(parsed.toolCalls, calls, name)
            let errors = try XCTUnwrap(c["errors"]?.arrayValue).map {
                ToolCallError(kind: $0["kind"]!.stringValue!, raw: $0["raw"]!.stringValue!)
            }
            XCTAssertEqual(parsed.errors, errors, name)
            malformed += errors.isEmpty ? 0 : 1
        }
        XCTAssertGreaterThanOrEqual(malformed, 5)
    }

    func testArgumentsGoOutAsOneLineOfJSON() throws {
        let parsed = ToolCallParser.parse("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2.5], \"s\": \"a\\nb\"}}\n</tool_call>")
        let call = try XCTUnwrap(parsed.toolCalls.first)
        XCTAssertFalse(call.argumentsJSON.contains("\n"))
        XCTAssertEqual(try JSON.parse(call.argumentsJSON), .object(call.arguments))
    }
}
