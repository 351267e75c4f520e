import Foundation
import XCTest
@testable import QwenEdgeCore

/// What the shared table (TamperTableTests) cannot say: the app's pinned manifest digest, the path rule on its
/// own, and what a good bundle's manifest gives the app. The tampering itself is in tests/golden/tamper.json.
final class VerifierTests: XCTestCase {
    let fixture = repoRoot.appendingPathComponent("tests/golden/bundle")

    func testFixtureIsGoodAndReadsAsTheAppNeedsIt() throws {
        let report = BundleVerifier.verify(fixture)
        XCTAssertEqual(report.problems, [])
        let manifest = try XCTUnwrap(report.manifest)
        XCTAssertEqual(manifest.maxSeqLen, 256)
        XCTAssertEqual(manifest.vocabSize, 382)
        XCTAssertEqual(manifest.backend, "reference")
        XCTAssertEqual(manifest.quant, "fp32")
        XCTAssertEqual(manifest.special.eos, [0, 2])
        XCTAssertEqual(manifest.entryFiles, ["model.bin"])
        XCTAssertEqual(manifest.files["model.bin"]?.bytes, 1024)
        let entry = try XCTUnwrap(manifest.entryPoints.first)
        XCTAssertEqual(entry.name, "forward")
        XCTAssertNil(entry.function)
        XCTAssertEqual(entry.inputs[0].shape, [.fixed(1), .named("seq_len")])
        XCTAssertNil(entry.inputs[0].fixedShape)
        XCTAssertEqual(entry.outputs[0].fixedShape, [1, 382])
        XCTAssertEqual(entry.states, [])
        XCTAssertEqual(entry.layers, [])
        XCTAssertTrue(manifest.qwen3Template)
    }

    func testTheManifestSaysWhoseChatTemplateItIs() throws {
        let good = try String(contentsOf: fixture.appendingPathComponent("manifest.json"), encoding: .utf8)
        let own = good.replacingOccurrences(of: "\"chat_template\": \"qwen3\"", with: "\"chat_template\": \"checkpoint\"")
        XCTAssertNotEqual(good, own)
        XCTAssertFalse(try BundleManifest.parse(Data(own.utf8)).qwen3Template)
    }

    func testAPinnedDigestMustMatch() throws {
        let data = try Data(contentsOf: fixture.appendingPathComponent("manifest.json"))
        let digest = SHA256Hex.of(data)
        XCTAssertEqual(BundleVerifier.verify(fixture, pinnedManifestSHA256: digest).problems, [])
        XCTAssertEqual(BundleVerifier.verify(fixture, pinnedManifestSHA256: digest.uppercased()).problems, [])
        let wrong = BundleVerifier.verify(fixture, pinnedManifestSHA256: String(repeating: "0", count: 64))
        XCTAssertEqual(wrong.codes, [.manifestDigest])
        XCTAssertTrue(wrong.problems[0].message.contains(digest), wrong.problems[0].message)
    }

    func testUnsafePathsMatchThePythonRule() {
        XCTAssertNil(BundleVerifier.unsafePath("model.onnx"))
        XCTAssertNil(BundleVerifier.unsafePath("a/b.bin"))
        for bad in ["../x", "/x", "a/../../x", "a\\..\\x", "", "./x", "~/x", "a//b", "a/", "a\0b"] {
            XCTAssertNotNil(BundleVerifier.unsafePath(bad), bad)
        }
    }

    func testManifestParseNamesTheCode() throws {
        func code(_ text: String) -> ProblemCode? {
            do {
                _ = try BundleManifest.parse(Data(text.utf8))
                return nil
            } catch let invalid as BundleManifest.Invalid {
                return invalid.code
            } catch {
                return nil
            }
        }
        XCTAssertEqual(code("{\"format_version\": 01}"), .manifestInvalid)
        XCTAssertEqual(code("{\"format_version\": true}"), .formatVersion)
        XCTAssertEqual(code("{\"format_version\": 1.0}"), .schema)  // 1.0 is the integer 1 (JSON Schema), as in Python
        XCTAssertEqual(code("{\"format_version\": 1}"), .schema)
    }
}
