import Foundation
import XCTest
@testable import QwenEdgeCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// tests/golden/tamper.json: the tampering cases and the exact set of problem codes each must produce, shared
/// with the Android core (TamperTableTest.java) and the Python verifier (tests/test_tamper_table.py).
enum TamperTable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func load() throws -> JSONObject {
        let data = try Data(contentsOf: repoRoot.appendingPathComponent("tests/golden/tamper.json"))
        guard let table = try JSON.parse(data).objectValue else { throw Failure(description: "tamper.json is not an object") }
        return table
    }

    /// A fresh copy of the table's fixture bundle in a new temporary directory (removed by the caller).
    static func copyFixture(_ table: JSONObject) throws -> URL {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("qwen-edge-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let bundle = dir.appendingPathComponent("b")
        try fm.copyItem(at: repoRoot.appendingPathComponent(table["bundle"]?.stringValue ?? "?"), to: bundle)
        return bundle
    }

    /// RFC 6901 reference tokens of `pointer` ("/a/b~1c" → ["a", "b/c"]).
    static func tokens(_ pointer: String) throws -> [String] {
        guard pointer.hasPrefix("/") else { throw Failure(description: "pointer \(pointer) does not start with /") }
        return pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }

    /// `document` with the value at `tokens` set to `value` (added where the last token is a new key or "-" or
    /// the array's length), or removed when `value` is nil (it must exist).
    static func apply(_ document: JSONValue, _ tokens: ArraySlice<String>, _ value: JSONValue?) throws -> JSONValue {
        guard let token = tokens.first else {
            guard let value else { throw Failure(description: "cannot remove the whole document") }
            return value
        }
        let rest = tokens.dropFirst()
        switch document {
        case .object(var object):
            if rest.isEmpty {
                if value == nil && object[token] == nil { throw Failure(description: "no key \(token) to remove") }
                object[token] = value
            } else {
                guard let child = object[token] else { throw Failure(description: "no key \(token)") }
                object[token] = try apply(child, rest, value)
            }
            return .object(object)
        case .array(var items):
            let index = token == "-" ? items.count : Int(token) ?? -1
            guard index >= 0, index <= items.count, rest.isEmpty || index < items.count else {
                throw Failure(description: "no index \(token)")
            }
            if !rest.isEmpty {
                items[index] = try apply(items[index], rest, value)
            } else if let value {
                if index == items.count { items.append(value) } else { items[index] = value }
            } else {
                guard index < items.count else { throw Failure(description: "no index \(token) to remove") }
                items.remove(at: index)
            }
            return .array(items)
        default:
            throw Failure(description: "\(token) indexes a scalar")
        }
    }

    static func writeDigest(_ bundle: URL) throws {
        let manifest = try Data(contentsOf: bundle.appendingPathComponent("manifest.json"))
        try Data("\(SHA256Hex.of(manifest))  manifest.json\n".utf8).write(to: bundle.appendingPathComponent("manifest.sha256"))
    }

    static func run(_ step: JSONValue, in bundle: URL) throws {
        let fm = FileManager.default
        guard let op = step["op"]?.stringValue else { throw Failure(description: "step without op: \(step.pretty())") }
        let path = step["path"]?.stringValue.map { bundle.appendingPathComponent($0) }
        let manifestURL = bundle.appendingPathComponent("manifest.json")
        switch op {
        case "set", "remove":
            guard let pointer = step["pointer"]?.stringValue else { throw Failure(description: "\(op) needs a pointer") }
            let document = try JSON.parse(try Data(contentsOf: manifestURL))
            let changed = try apply(document, try tokens(pointer)[...], op == "set" ? step["value"] : nil)
            try Data((changed.pretty() + "\n").utf8).write(to: manifestURL)
            if step["keep_digest"] != .bool(true) { try writeDigest(bundle) }
        case "write_manifest_text":
            try Data((step["text"]?.stringValue ?? "").utf8).write(to: manifestURL)
        case "write":
            try Data((step["text"]?.stringValue ?? "").utf8).write(to: path!)
        case "append":
            let handle = try FileHandle(forWritingTo: path!)
            try handle.seekToEnd()
            try handle.write(contentsOf: Data((step["text"]?.stringValue ?? "").utf8))
            try handle.close()
        case "delete":
            try fm.removeItem(atPath: path!.path)
        case "symlink":
            try fm.createSymbolicLink(atPath: path!.path, withDestinationPath: step["target"]?.stringValue ?? "")
        case "fifo":
            guard mkfifo(path!.path, 0o644) == 0 else { throw Failure(description: "mkfifo \(path!.path) failed") }
        case "mkdir":
            try fm.createDirectory(at: path!, withIntermediateDirectories: false)
        default:
            throw Failure(description: "unknown op \(op)")
        }
    }
}

final class TamperTableTests: XCTestCase {
    func testTheTableNamesExactlyTheCodesThisVerifierReports() throws {
        let table = try TamperTable.load()
        XCTAssertEqual(Set(table["codes"]?.objectValue?.keys ?? []), Set(ProblemCode.allCases.map(\.rawValue)))
    }

    func testEveryCaseReportsExactlyItsCodes() throws {
        let table = try TamperTable.load()
        let cases = table["cases"]?.arrayValue ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        var failures: [String] = []
        for item in cases {
            let name = item["name"]?.stringValue ?? "?"
            let expect = Set((item["expect"]?.arrayValue ?? []).compactMap(\.stringValue))
            let bundle = try TamperTable.copyFixture(table)
            defer { try? FileManager.default.removeItem(at: bundle.deletingLastPathComponent()) }
            for step in item["steps"]?.arrayValue ?? [] { try TamperTable.run(step, in: bundle) }
            let report = BundleVerifier.verify(bundle)
            let got = Set(report.problems.map(\.code.rawValue))
            if got != expect {
                failures.append("\(name): expected \(expect.sorted()), got \(got.sorted()): \(report.problems)")
            }
            XCTAssertEqual(report.ok, expect.isEmpty, name)
            if expect.isEmpty { XCTAssertNotNil(report.manifest, name) }
            XCTAssertFalse(report.problems.contains { $0.message.isEmpty }, name)
        }
        XCTAssertEqual(failures, [], failures.joined(separator: "\n"))
    }

    /// The rewrite the table's set op makes is the exporter's format: parsing and rewriting the fixture's
    /// manifest gives back its exact bytes (json.dumps(indent=2, ensure_ascii=False) + "\n").
    func testSetRewritesTheManifestAsTheExporterWritesIt() throws {
        let url = repoRoot.appendingPathComponent("tests/golden/bundle/manifest.json")
        let data = try Data(contentsOf: url)
        XCTAssertEqual(Data((try JSON.parse(data).pretty() + "\n").utf8), data)
    }
}
