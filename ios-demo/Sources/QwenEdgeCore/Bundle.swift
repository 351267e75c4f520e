import Foundation

/// The problem codes every verifier of the bundle contract reports (Python's `verify`, the Android core, this
/// module); tests/golden/tamper.json defines them and drives all three.
public enum ProblemCode: String, CaseIterable, Sendable {
    case manifestMissing = "manifest_missing"
    case manifestInvalid = "manifest_invalid"
    case manifestDigest = "manifest_digest"
    case schema
    case formatVersion = "format_version"
    case unsafePath = "unsafe_path"
    case symlink
    case notRegular = "not_regular"
    case missingFile = "missing_file"
    case size
    case sha256
    case extraFile = "extra_file"
    case entryPoint = "entry_point"
}

/// One thing wrong with a bundle: its code and a line for people.
public struct Problem: Equatable, Sendable, CustomStringConvertible {
    public let code: ProblemCode
    public let message: String

    public init(_ code: ProblemCode, _ message: String) {
        (self.code, self.message) = (code, message)
    }

    public var description: String { message }
}

/// A bundle's manifest.json, checked against runtimes/manifest.schema.json on parse (nothing is defaulted: a
/// field the schema requires and the manifest lacks is an error), and the fields the app uses.
public struct BundleManifest: Sendable {
    public static let formatVersion = 1

    public struct FileEntry: Equatable, Sendable {
        public var sha256: String
        public var bytes: Int
    }

    public var target: String, backend: String, quant: String
    public var maxSeqLen: Int, vocabSize: Int
    /// The chat template is Qwen3's, which ChatTemplate renders; false: the checkpoint's own (only jinja renders it).
    public var qwen3Template: Bool
    public var special: SpecialTokens
    public var stopThinkingText: String
    public var stopThinkingIds: [Int]
    public var files: [String: FileEntry]
    public var entryPoints: [EntryPoint]
    public var entryFiles: [String] { entryPoints.map(\.file) }
    public var numHiddenLayers: Int
    /// The reference fixture's file (FixtureCheck runs it), or nil for a bundle exported before fixtures.
    public var fixtureFile: String?

    /// Why a manifest was refused: `code` is manifest_invalid, format_version or schema.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let code: ProblemCode
        public let description: String
    }

    public static func parse(_ data: Data) throws -> BundleManifest {
        let value: JSONValue
        do {
            value = try JSON.parse(data)
        } catch {
            throw Invalid(code: .manifestInvalid, description: "manifest.json is not valid JSON (\(error))")
        }
        guard let m = value.objectValue else {
            throw Invalid(code: .manifestInvalid, description: "manifest.json is not a JSON object")
        }
        guard m["format_version"]?.intValue == formatVersion else {
            let found = m["format_version"].map { $0.pretty(indent: 0) } ?? "(none)"
            throw Invalid(code: .formatVersion, description: "format_version \(found) is not \(formatVersion), the "
                          + "version this app reads; export the bundle again with this version")
        }
        let errors = ManifestSchema.shipped.errors(value)
        if let first = errors.first {
            let more = errors.count > 1 ? " (and \(errors.count - 1) more)" : ""
            throw Invalid(code: .schema, description: "manifest: \(first)\(more)")
        }
        return try BundleManifest(m)
    }

    /// The fields, from a manifest that passed the schema (each read still fails closed, never defaults).
    init(_ m: JSONObject) throws {
        func fail(_ what: String) -> Invalid { Invalid(code: .schema, description: "manifest: \(what)") }
        func int(_ value: JSONValue?, _ what: String) throws -> Int {
            guard let v = value?.intValue, v >= 0 else { throw fail("\(what) is not a non-negative integer") }
            return v
        }
        func string(_ value: JSONValue?, _ what: String) throws -> String {
            guard let s = value?.stringValue else { throw fail("\(what) is not a string") }
            return s
        }
        func object(_ value: JSONValue?, _ what: String) throws -> JSONObject {
            guard let o = value?.objectValue else { throw fail("\(what) is not an object") }
            return o
        }
        func ints(_ value: JSONValue?, _ what: String) throws -> [Int] {
            guard let items = value?.arrayValue, !items.isEmpty else { throw fail("\(what) is not a non-empty array") }
            return try items.map { try int($0, what) }
        }
        target = try string(m["target"], "target")
        backend = try string(m["backend"], "backend")
        quant = try string(try object(m["quant"], "quant")["name"], "quant.name")
        maxSeqLen = try int(m["max_seq_len"], "max_seq_len")
        let rows = try int(try object(m["architecture"], "architecture")["vocab_size"], "architecture.vocab_size")
        vocabSize = rows
        qwen3Template = m["chat_template"]?.stringValue != "checkpoint"
        // A token id the model can be fed: one of the embedding's vocab_size rows (a larger id reads past it).
        func tokenID(_ value: JSONValue?, _ what: String) throws -> Int {
            let id = try int(value, what)
            guard id < rows else {
                throw fail("\(what) \(id) is past architecture.vocab_size \(rows) (the embedding's rows)")
            }
            return id
        }
        func tokenIDs(_ value: JSONValue?, _ what: String) throws -> [Int] {
            guard let items = value?.arrayValue, !items.isEmpty else { throw fail("\(what) is not a non-empty array") }
            return try items.map { try tokenID($0, what) }
        }
        let s = try object(m["special_tokens"], "special_tokens")
        special = SpecialTokens(imStart: try tokenID(s["im_start"], "special_tokens.im_start"),
                                imEnd: try tokenID(s["im_end"], "special_tokens.im_end"),
                                thinkOpen: try tokenID(s["think_open"], "special_tokens.think_open"),
                                thinkClose: try tokenID(s["think_close"], "special_tokens.think_close"),
                                endOfText: try tokenID(s["endoftext"], "special_tokens.endoftext"),
                                eos: try tokenIDs(s["eos"], "special_tokens.eos"))
        let thinking = try object(m["thinking"], "thinking")
        stopThinkingText = try string(thinking["stop_text"], "thinking.stop_text")
        stopThinkingIds = try tokenIDs(thinking["stop_token_ids"], "thinking.stop_token_ids")
        var files: [String: FileEntry] = [:]
        for (name, value) in try object(m["files"], "files").entries {
            let entry = try object(value, "files.\(name)")
            files[name] = FileEntry(sha256: try string(entry["sha256"], "files.\(name).sha256"),
                                    bytes: try int(entry["bytes"], "files.\(name).bytes"))
        }
        self.files = files
        numHiddenLayers = try int(try object(m["architecture"], "architecture")["num_hidden_layers"],
                                  "architecture.num_hidden_layers")
        fixtureFile = try m["fixture"].map { try string(try object($0, "fixture")["file"], "fixture.file") }
        guard let points = m["entry_points"]?.arrayValue, !points.isEmpty else { throw fail("entry_points is empty") }
        func tensors(_ value: JSONValue?, _ what: String) throws -> [Tensor] {
            try (value?.arrayValue ?? []).map { t in
                let shape = try (t["shape"]?.arrayValue ?? []).map { d -> Tensor.Dim in
                    if let n = d.intValue { return .fixed(n) }
                    return .named(try string(d, "\(what) shape"))
                }
                return Tensor(name: try string(t["name"], "\(what) name"), dtype: try string(t["dtype"], "\(what) dtype"),
                              shape: shape)
            }
        }
        entryPoints = try points.map { p in
            let name = try string(p["name"], "entry point name")
            return EntryPoint(name: name, file: try string(p["file"], "entry point \(name) file"),
                              function: try p["function"].map { try string($0, "entry point \(name) function") },
                              inputs: try tensors(p["inputs"], "\(name) input"),
                              outputs: try tensors(p["outputs"], "\(name) output"),
                              states: try tensors(p["states"], "\(name) state"),
                              layers: try p["layers"].map { try ints($0, "entry point \(name) layers") } ?? [])
        }
    }

    /// A tensor an entry point takes, returns or keeps as state: a fixed size or a named dynamic one per dimension.
    public struct Tensor: Equatable, Sendable {
        public enum Dim: Equatable, Sendable {
            case fixed(Int), named(String)
            public var fixed: Int? { if case .fixed(let n) = self { return n } else { return nil } }
        }

        public var name: String, dtype: String
        public var shape: [Dim]
        /// Every dimension's size, or nil when one is dynamic.
        public var fixedShape: [Int]? {
            let sizes = shape.compactMap(\.fixed)
            return sizes.count == shape.count ? sizes : nil
        }
    }

    /// One entry point of the manifest: a file (and the function of a multifunction one), its tensors, and the
    /// decoder layers it runs when it runs a chunk of them.
    public struct EntryPoint: Equatable, Sendable {
        public var name: String, file: String
        public var function: String?
        public var inputs: [Tensor], outputs: [Tensor], states: [Tensor]
        public var layers: [Int]
    }
}

/// The bundle contract of `python -m exporter verify` (runtimes/verify.py), applied before the app loads a
/// bundle; tests/golden/tamper.json holds the cases all three verifiers must agree on. In order:
/// 1. manifest.json exists and is a regular file (else manifest_missing, symlink or not_regular; stop);
/// 2. manifest.sha256 holds `<sha256 of manifest.json>  manifest.json\n`, and the digest equals the pinned one
///    when the app pins one (else manifest_digest; go on);
/// 3. manifest.json is strict JSON and an object (manifest_invalid), has format_version 1 (format_version) and
///    passes the schema (schema); any of these stops the check: a manifest that is wrong describes no files;
/// 4. every listed file: a safe relative path (unsafe_path), no symbolic link on the way (symlink), present
///    (missing_file), a regular file (not_regular), its size (size), then its sha256 (sha256);
/// 5. everything in the bundle: no symbolic link (symlink), no FIFO, socket or device (not_regular), no file the
///    manifest does not list besides manifest.json and manifest.sha256 (extra_file);
/// 6. every entry point names a listed file or directory (entry_point).
/// Nothing is followed through a symbolic link and nothing but regular files is opened (a FIFO would block).
public enum BundleVerifier {
    public static let manifestName = "manifest.json"
    public static let digestName = "manifest.sha256"

    public struct Report: Sendable {
        public var manifest: BundleManifest?
        public var problems: [Problem] = []
        public var ok: Bool { problems.isEmpty }
        public var codes: Set<ProblemCode> { Set(problems.map(\.code)) }
    }

    /// Why a manifest file name could leave the bundle, or nil (the rule of runtimes.verify.unsafe_path).
    public static func unsafePath(_ name: String) -> String? {
        if name.isEmpty || name.contains("\\") || name.contains("\0") { return "is not a plain relative path" }
        if name.hasPrefix("/") || name.hasPrefix("~") { return "is absolute" }
        for part in name.split(separator: "/", omittingEmptySubsequences: false)
        where part.isEmpty || part == ".." || part == "." {
            return "leaves the bundle (.. or empty parts)"
        }
        return nil
    }

    enum Kind: Equatable {
        case absent, directory, symlink, other
        case regular(Int)
    }

    /// What is at `path`, without following a symbolic link there.
    static func kind(_ path: String) -> Kind {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return .absent }
        switch attributes[.type] as? FileAttributeType {
        case .typeRegular?: return .regular((attributes[.size] as? NSNumber)?.intValue ?? -1)
        case .typeDirectory?: return .directory
        case .typeSymbolicLink?: return .symlink
        default: return .other
        }
    }

    /// Every path under `root` (relative, "/"-separated, sorted), not descending through symbolic links.
    static func walk(_ root: String, _ rel: String = "", into out: inout [(String, Kind)]) {
        let dir = rel.isEmpty ? root : "\(root)/\(rel)"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names.sorted() {
            let path = rel.isEmpty ? name : "\(rel)/\(name)"
            let k = kind("\(root)/\(path)")
            out.append((path, k))
            if k == .directory { walk(root, path, into: &out) }
        }
    }

    /// `pinnedManifestSHA256`: the manifest digest the app expects (64 hex digits), when it ships one.
    public static func verify(_ bundle: URL, pinnedManifestSHA256: String? = nil) -> Report {
        var report = Report()
        let root = bundle.path
        switch kind("\(root)/\(manifestName)") {
        case .absent, .directory:
            report.problems.append(Problem(.manifestMissing, "\(manifestName) is missing: not a qwen-edge bundle"))
            return report
        case .symlink:
            report.problems.append(Problem(.symlink, "\(manifestName) is a symbolic link"))
            return report
        case .other:
            report.problems.append(Problem(.notRegular, "\(manifestName) is not a regular file"))
            return report
        case .regular:
            break
        }
        guard let data = FileManager.default.contents(atPath: "\(root)/\(manifestName)") else {
            report.problems.append(Problem(.manifestMissing, "\(manifestName) cannot be read"))
            return report
        }
        report.problems += digestProblems(root, data, pinned: pinnedManifestSHA256)
        let manifest: BundleManifest
        do {
            manifest = try BundleManifest.parse(data)
        } catch let invalid as BundleManifest.Invalid {
            report.problems.append(Problem(invalid.code, invalid.description))
            return report
        } catch {
            report.problems.append(Problem(.manifestInvalid, "\(error)"))
            return report
        }
        report.manifest = manifest
        report.problems += fileProblems(root, manifest)
        return report
    }

    static func digestProblems(_ root: String, _ manifest: Data, pinned: String?) -> [Problem] {
        var problems: [Problem] = []
        let hex = SHA256Hex.of(manifest)
        let expected = Data("\(hex)  \(manifestName)\n".utf8)
        switch kind("\(root)/\(digestName)") {
        case .absent:
            problems.append(Problem(.manifestDigest, "\(digestName) is missing (it holds \(manifestName)'s sha256, "
                                    + "as sha256sum writes it)"))
        case .regular(let size):
            let found = size == expected.count ? FileManager.default.contents(atPath: "\(root)/\(digestName)") : nil
            if found != expected {
                problems.append(Problem(.manifestDigest, "\(digestName) does not hold \(manifestName)'s sha256 \(hex) "
                                        + "(\(manifestName) changed after export, or \(digestName) is malformed)"))
            }
        default:
            problems.append(Problem(.manifestDigest, "\(digestName) is not a regular file"))
        }
        if let pinned, pinned.lowercased() != hex {
            problems.append(Problem(.manifestDigest, "\(manifestName) has sha256 \(hex), the app expects \(pinned)"))
        }
        return problems
    }

    static func fileProblems(_ root: String, _ manifest: BundleManifest) -> [Problem] {
        var problems: [Problem] = []
        for (name, entry) in manifest.files.sorted(by: { $0.key < $1.key }) {
            if let why = unsafePath(name) {
                problems.append(Problem(.unsafePath, "file '\(name)' \(why)"))
                continue
            }
            var current = root
            var linked = false
            for part in name.split(separator: "/") where !linked {
                current += "/\(part)"
                linked = kind(current) == .symlink
            }
            if linked {
                problems.append(Problem(.symlink, "\(name) is or passes through a symbolic link (a bundle holds real "
                                        + "files only)"))
                continue
            }
            switch kind("\(root)/\(name)") {
            case .absent, .directory, .symlink:
                problems.append(Problem(.missingFile, "\(name) is missing"))
            case .other:
                problems.append(Problem(.notRegular, "\(name) is not a regular file (a FIFO, socket or device)"))
            case .regular(let size):
                if size != entry.bytes {
                    problems.append(Problem(.size, "\(name) has \(size) bytes, manifest says \(entry.bytes)"))
                } else if (try? SHA256Hex.of(fileAt: URL(fileURLWithPath: "\(root)/\(name)"))) != entry.sha256 {
                    problems.append(Problem(.sha256, "\(name) does not match its sha256 (changed after export)"))
                }
            }
        }
        var everything: [(String, Kind)] = []
        walk(root, into: &everything)
        for (rel, k) in everything where manifest.files[rel] == nil {
            switch k {
            case .symlink:
                problems.append(Problem(.symlink, "\(rel) is a symbolic link not in the manifest"))
            case .other:
                problems.append(Problem(.notRegular, "\(rel) is not a regular file (a FIFO, socket or device)"))
            case .regular where rel != manifestName && rel != digestName:
                problems.append(Problem(.extraFile, "\(rel) is not in the manifest (extra file)"))
            default:
                break
            }
        }
        for file in manifest.entryFiles
        where manifest.files[file] == nil && !manifest.files.keys.contains(where: { $0.hasPrefix(file + "/") }) {
            problems.append(Problem(.entryPoint, "entry point names '\(file)', which the manifest does not list"))
        }
        return problems
    }
}
