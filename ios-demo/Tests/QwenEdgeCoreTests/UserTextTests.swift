import Foundation
import XCTest
@testable import QwenEdgeCore

/// Replays tests/golden/user_text.json: special-token strings in user and tool text never become control tokens.
final class UserTextTests: XCTestCase {
    func testChunksEveryGoldenConversationAsThePythonRuntime() throws {
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/user_text.json"))
        let golden = try JSON.parse(data)
        let specials = try XCTUnwrap(golden["special_tokens"]?.arrayValue).map { $0.stringValue! }
        let cases = try XCTUnwrap(golden["cases"]?.arrayValue)
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let messages = try XCTUnwrap(c["messages"]?.arrayValue).map {
                Message(role: $0["role"]!.stringValue!, content: $0["content"]!.stringValue!)
            }
            let rendered = try ChatTemplate.render(ChatTemplate.userTextAsText(messages, specialTokens: specials))
            let expected = try XCTUnwrap(c["chunks"]?.arrayValue).map { $0.stringValue! }
            XCTAssertEqual(ChatTemplate.encodingChunks(rendered, specialTokens: specials), expected)
        }
    }
}
