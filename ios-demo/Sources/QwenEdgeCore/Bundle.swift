import CryptoKit
import Foundation

/// A bundle's manifest.json (runtimes/manifest.schema.json): the fields the app relies on, checked on parse.
public struct BundleManifest {
    public static let formatVersion = 1
    static let required = ["format", "format_version", "created_by", "source_model", "architecture", "target",
                           "backend", "quant", "max_seq_len", "kv_cache", "entry_points", "special_tokens",
                           "thinking", "files"]

    public struct FileEntry: Equatable {
        public var sha256: String
        public var bytes: Int
    }

    public var target: String, backend: String, quant: String
    public var maxSeqLen: Int, vocabSize: Int
    public var special: SpecialTokens
    public var stopThinkingText: String
    public var stopThinkingIds: [Int]
    public var files: [String: FileEntry]
    public var entryFiles: [String]
    /// The Core ML program's prefill chunk (the bound of its flexible sequence dimension), 1 if fixed.
    public var chunk: Int

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ data: Data) throws -> BundleManifest {
        guard let object = try? JSONSerialization.jsonObject(with: data),
              let m = object as? [String: Any] else { throw Invalid(description: "invalid JSON") }
        for key in required where m[key] == nil { throw Invalid(description: "'\(key)' is a required property") }
        guard m["format"] as? String == "qwen-edge-bundle" else { throw Invalid(description: "format is not qwen-edge-bundle") }
        guard let version = m["format_version"] as? Int, version == formatVersion else {
            throw Invalid(description: "format_version \(m["format_version"] ?? "null") is not \(formatVersion), the version this app reads")
        }
        func int(_ value: Any?, _ what: String) throws -> Int {
            guard let v = value as? Int, v >= 0 else { throw Invalid(description: "\(what) is not a non-negative integer") }
            return v
        }
        func dict(_ value: Any?, _ what: String) throws -> [String: Any] {
            guard let v = value as? [String: Any] else { throw Invalid(description: "\(what) is not an object") }
            return v
        }
        let s = try dict(m["special_tokens"], "special_tokens")
        let eos = try (s["eos"] as? [Any] ?? []).map { try int($0, "special_tokens.eos") }
        let thinking = try dict(m["thinking"], "thinking")
        let stopIds = try (thinking["stop_token_ids"] as? [Any] ?? []).map { try int($0, "thinking.stop_token_ids") }
        guard !stopIds.isEmpty, let stopText = thinking["stop_text"] as? String else {
            throw Invalid(description: "thinking needs stop_text and stop_token_ids")
        }
        var files: [String: FileEntry] = [:]
        for (name, value) in try dict(m["files"], "files") {
            let entry = try dict(value, "files.\(name)")
            guard let sha = entry["sha256"] as? String, sha.count == 64,
                  sha.allSatisfy({ "0123456789abcdef".contains($0) }) else {
                throw Invalid(description: "files.\(name).sha256 is not a sha256")
            }
            files[name] = FileEntry(sha256: sha, bytes: try int(entry["bytes"], "files.\(name).bytes"))
        }
        guard let points = m["entry_points"] as? [[String: Any]], !points.isEmpty else {
            throw Invalid(description: "entry_points is empty")
        }
        let entryFiles = try points.map { point -> String in
            guard let file = point["file"] as? String else { throw Invalid(description: "entry point without file") }
            return file
        }
        var chunk = 1
        if let inputs = points[0]["inputs"] as? [[String: Any]], let shape = inputs.first?["shape"] as? [Any],
           shape.count >= 2 {
            if let fixed = shape[1] as? Int { chunk = fixed }
            else if let named = shape[1] as? String, let bound = Int(named.split(separator: "=").last ?? "") { chunk = bound }
        }
        return BundleManifest(
            target: m["target"] as? String ?? "", backend: m["backend"] as? String ?? "",
            quant: (try dict(m["quant"], "quant"))["name"] as? String ?? "",
            maxSeqLen: try int(m["max_seq_len"], "max_seq_len"),
            vocabSize: try int((try dict(m["architecture"], "architecture"))["vocab_size"], "vocab_size"),
            special: SpecialTokens(imStart: try int(s["im_start"], "im_start"), imEnd: try int(s["im_end"], "im_end"),
                                   thinkOpen: try int(s["think_open"], "think_open"),
                                   thinkClose: try int(s["think_close"], "think_close"),
                                   endOfText: try int(s["endoftext"], "endoftext"), eos: eos),
            stopThinkingText: stopText, stopThinkingIds: stopIds, files: files, entryFiles: entryFiles, chunk: chunk)
    }
}

/// The file and path rules of `python -m exporter verify` (runtimes/verify.py), applied before loading a bundle.
public enum BundleVerifier {
    public static func unsafePath(_ name: String) -> String? {
        if name.isEmpty || name.contains("\\") || name.contains("\0") { return "is not a plain relative path" }
        if name.hasPrefix("/") || name.hasPrefix("~") { return "is absolute" }
        for part in name.split(separator: "/", omittingEmptySubsequences: false)
        where part.isEmpty || part == ".." || part == "." {
            return "leaves the bundle (.. or empty parts)"
        }
        return nil
    }

    static func isSymlink(_ url: URL) -> Bool {
        (try? url.resourceValues(forKeys: [.isSymbolicLinkKey]).isSymbolicLink) ?? false
    }

    public static func sha256(_ url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// (manifest or nil, one line per problem; none means the bundle is good).
    public static func verify(_ bundle: URL) -> (BundleManifest?, [String]) {
        let manifestURL = bundle.appendingPathComponent("manifest.json")
        if isSymlink(manifestURL) { return (nil, ["manifest.json is a symbolic link"]) }
        guard let data = try? Data(contentsOf: manifestURL) else {
            return (nil, ["manifest.json is missing: not a qwen-edge bundle"])
        }
        let manifest: BundleManifest
        do { manifest = try BundleManifest.parse(data) } catch { return (nil, ["manifest: \(error)"]) }
        var problems: [String] = []
        let root = bundle.resolvingSymlinksInPath().standardizedFileURL.path
        for (name, entry) in manifest.files.sorted(by: { $0.key < $1.key }) {
            if let why = unsafePath(name) {
                problems.append("file '\(name)' \(why)")
                continue
            }
            var current = bundle
            var linked = false
            for part in name.split(separator: "/") {
                current.appendPathComponent(String(part))
                if isSymlink(current) { linked = true }
            }
            if linked {
                problems.append("\(name) is or passes through a symbolic link")
                continue
            }
            let url = bundle.appendingPathComponent(name)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
                  attributes[.type] as? FileAttributeType == .typeRegular else {
                problems.append("\(name) is missing")
                continue
            }
            if !url.resolvingSymlinksInPath().standardizedFileURL.path.hasPrefix(root + "/") {
                problems.append("\(name) resolves outside the bundle")
                continue
            }
            let size = (attributes[.size] as? NSNumber)?.intValue ?? -1
            if size != entry.bytes {
                problems.append("\(name) has \(size) bytes, manifest says \(entry.bytes)")
            } else if (try? sha256(url)) != entry.sha256 {
                problems.append("\(name) does not match its sha256 (changed after export)")
            }
        }
        if let walker = FileManager.default.enumerator(at: bundle, includingPropertiesForKeys: [.isRegularFileKey,
                                                                                             .isSymbolicLinkKey]) {
            var extra: [String] = []
            for case let url as URL in walker {
                let rel = String(url.standardizedFileURL.path.dropFirst(bundle.standardizedFileURL.path.count + 1))
                let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isSymbolicLinkKey])
                let isFile = (values?.isRegularFile ?? false) || (values?.isSymbolicLink ?? false)
                if isFile && rel != "manifest.json" && manifest.files[rel] == nil {
                    extra.append((values?.isSymbolicLink ?? false) ? "\(rel) is a symbolic link not in the manifest"
                                                                    : "\(rel) is not in the manifest (extra file)")
                }
            }
            problems += extra.sorted()
        }
        for file in manifest.entryFiles
        where manifest.files[file] == nil && !manifest.files.keys.contains(where: { $0.hasPrefix(file + "/") }) {
            problems.append("entry point names '\(file)', which the manifest does not list")
        }
        return (manifest, problems)
    }
}
