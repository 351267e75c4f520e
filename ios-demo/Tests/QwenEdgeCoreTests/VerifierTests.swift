import Foundation
import XCTest
@testable import QwenEdgeCore

/// The same tampering tests/test_verify.py and the Android core's VerifierTest apply, on tests/golden/bundle.
final class VerifierTests: XCTestCase {
    let fm = FileManager.default

    func copyFixture() throws -> URL {
        let dir = fm.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let bundle = dir.appendingPathComponent("b")
        try fm.copyItem(at: repoRoot.appendingPathComponent("tests/golden/bundle"), to: bundle)
        return bundle
    }

    func editManifest(_ bundle: URL, _ from: String, _ to: String) throws {
        let url = bundle.appendingPathComponent("manifest.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        XCTAssertTrue(text.contains(from), "fixture manifest lacks \(from)")
        try text.replacingOccurrences(of: from, with: to).write(to: url, atomically: true, encoding: .utf8)
    }

    func testFixtureIsGood() throws {
        let (manifest, problems) = BundleVerifier.verify(try copyFixture())
        XCTAssertEqual(problems, [])
        XCTAssertEqual(manifest?.maxSeqLen, 256)
    }

    func testEveryKindOfTamperingIsCaught() throws {
        let zeros = String(repeating: "0", count: 64)
        let kinds: [(String, (URL) throws -> Void, String)] = [
            ("changed byte", { b in
                var data = try Data(contentsOf: b.appendingPathComponent("model.bin"))
                data[data.count / 2] ^= 0xFF
                try data.write(to: b.appendingPathComponent("model.bin"))
            }, "does not match its sha256"),
            ("truncated", { b in
                let data = try Data(contentsOf: b.appendingPathComponent("model.bin"))
                try data.prefix(data.count - 10).write(to: b.appendingPathComponent("model.bin"))
            }, "bytes, manifest says"),
            ("missing file", { b in try self.fm.removeItem(at: b.appendingPathComponent("tokenizer_config.json")) },
             "tokenizer_config.json is missing"),
            ("extra file", { b in try Data([0x7f]).write(to: b.appendingPathComponent("payload.so")) },
             "payload.so is not in the manifest"),
            ("path escape", { b in try self.editManifest(b, "\"files\": {",
                                                         "\"files\": {\"../secret.txt\": {\"sha256\": \"\(zeros)\", \"bytes\": 1},") },
             "leaves the bundle"),
            ("absolute path", { b in try self.editManifest(b, "\"files\": {",
                                                           "\"files\": {\"/etc/passwd\": {\"sha256\": \"\(zeros)\", \"bytes\": 1},") },
             "is absolute"),
            ("symlink out", { b in
                let outside = b.deletingLastPathComponent().appendingPathComponent("outside.json")
                try self.fm.copyItem(at: b.appendingPathComponent("tokenizer.json"), to: outside)
                try self.fm.removeItem(at: b.appendingPathComponent("tokenizer.json"))
                try self.fm.createSymbolicLink(at: b.appendingPathComponent("tokenizer.json"), withDestinationURL: outside)
            }, "symbolic link"),
            ("wrong version", { b in try self.editManifest(b, "\"format_version\": 1", "\"format_version\": 2") },
             "format_version 2 is not 1"),
            ("schema violation", { b in try self.editManifest(b, "\"special_tokens\"", "\"special_tokenz\"") },
             "'special_tokens' is a required property"),
            ("manifest not JSON", { b in try "{not json".write(to: b.appendingPathComponent("manifest.json"),
                                                               atomically: true, encoding: .utf8) },
             "invalid JSON"),
            ("manifest missing", { b in try self.fm.removeItem(at: b.appendingPathComponent("manifest.json")) },
             "manifest.json is missing"),
            ("entry point unlisted", { b in try self.editManifest(b, "\"file\": \"model.bin\"", "\"file\": \"other.bin\"") },
             "names 'other.bin'"),
        ]
        for (kind, tamper, message) in kinds {
            let bundle = try copyFixture()
            try tamper(bundle)
            let (_, problems) = BundleVerifier.verify(bundle)
            XCTAssertTrue(problems.contains { $0.contains(message) }, "\(kind): \(problems)")
        }
    }

    func testUnsafePathsMatchThePythonRule() {
        XCTAssertNil(BundleVerifier.unsafePath("model.onnx"))
        XCTAssertNil(BundleVerifier.unsafePath("a/b.bin"))
        for bad in ["../x", "/x", "a/../../x", "a\\..\\x", "", "./x"] {
            XCTAssertNotNil(BundleVerifier.unsafePath(bad), bad)
        }
    }
}
