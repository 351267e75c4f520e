import Foundation
import XCTest
@testable import QwenEdgeCore
#if canImport(CryptoKit)
import CryptoKit
#endif

/// PortableSHA256 against the SHA-256 examples NIST publishes for FIPS 180-4 ("abc", the empty message, the 448-
/// and 896-bit messages, one million "a"), plus the two padding boundaries (55 and 56 zero bytes, digests from
/// Python's hashlib), each hashed whole, byte by byte and in uneven pieces.
final class SHA256Tests: XCTestCase {
    static let vectors: [(String, [UInt8], String)] = [
        ("abc", Array("abc".utf8), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("empty", [], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("448 bits", Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8),
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ("896 bits", Array(("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                            + "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu").utf8),
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
        ("55 bytes (padding fits one block)", [UInt8](repeating: 0, count: 55),
         "02779466cdec163811d078815c633f21901413081449002f24aa3e80f0b88ef7"),
        ("56 bytes (padding needs a second block)", [UInt8](repeating: 0, count: 56),
         "d4817aa5497628e7c77e6b606107042bbba3130888c5f47a375e6179be789fbb"),
    ]

    func hex(_ bytes: [UInt8], pieces: [Int]? = nil) -> String {
        var hasher = PortableSHA256()
        if let pieces {
            var at = 0
            var i = 0
            while at < bytes.count {
                let n = min(pieces[i % pieces.count], bytes.count - at)
                hasher.update(data: Data(bytes[at..<at + n]))
                at += n
                i += 1
            }
        } else {
            hasher.update(bytes)
        }
        return SHA256Hex.hex(hasher.finalize())
    }

    func testNISTExamples() {
        for (name, message, digest) in Self.vectors {
            XCTAssertEqual(hex(message), digest, name)
            XCTAssertEqual(hex(message, pieces: [1]), digest, "\(name), byte by byte")
            XCTAssertEqual(hex(message, pieces: [3, 64, 1, 70]), digest, "\(name), in pieces")
            XCTAssertEqual(SHA256Hex.of(Data(message)), digest, "\(name), the platform's SHA-256")
        }
    }

    func testOneMillionA() {
        let message = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let digest = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        var hasher = PortableSHA256()
        hasher.update(data: Data(message))
        XCTAssertEqual(SHA256Hex.hex(hasher.finalize()), digest)
        XCTAssertEqual(hex(message, pieces: [1000, 1, 4095]), digest)
        XCTAssertEqual(SHA256Hex.of(Data(message)), digest)
    }

    /// A file read in 1 MiB pieces gives the digest the exporter wrote into the fixture's manifest.
    func testFilesMatchTheFixtureManifest() throws {
        let bundle = repoRoot.appendingPathComponent("tests/golden/bundle")
        let manifest = try BundleManifest.parse(Data(contentsOf: bundle.appendingPathComponent("manifest.json")))
        XCTAssertEqual(manifest.files.count, 4)
        for (name, entry) in manifest.files {
            XCTAssertEqual(try SHA256Hex.of(fileAt: bundle.appendingPathComponent(name)), entry.sha256, name)
        }
    }

    #if canImport(CryptoKit)
    func testAgreesWithCryptoKit() {
        var generator = SystemRandomNumberGenerator()
        for count in [0, 1, 63, 64, 65, 119, 120, 1000, 65_537] {
            let message = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            XCTAssertEqual(hex(message), SHA256Hex.hex(SHA256.hash(data: Data(message))), "\(count) bytes")
        }
    }
    #endif
}
