package dev.qwenedge.core;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A bundle's manifest.json (runtimes/manifest.schema.json), the one interface between the Python side and the
 * apps. Parsing checks strict JSON, format_version and the whole schema (ManifestSchema) before reading the
 * fields the app uses; BundleVerifier checks the files.
 */
public final class Manifest {
    public static final int FORMAT_VERSION = 1;

    /** Why a manifest was refused: code is MANIFEST_INVALID, FORMAT_VERSION or SCHEMA. */
    public static final class Invalid extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        public final Problem.Code code;

        Invalid(Problem.Code code, String message) {
            super(message);
            this.code = code;
        }
    }

    public static final class FileEntry {
        public final String sha256;
        public final long bytes;

        FileEntry(String sha256, long bytes) {
            this.sha256 = sha256;
            this.bytes = bytes;
        }
    }

    public final String target;
    public final String backend;
    public final String quant;
    public final int maxSeqLen;
    public final int vocabSize;
    /** The chat template is Qwen3's, which ChatTemplate renders; false: the checkpoint's own (Python renders it). */
    public final boolean qwen3Template;
    public final SpecialTokens special;
    public final String stopThinkingText;
    public final int[] stopThinkingIds;
    public final Map<String, FileEntry> files;
    public final List<String> entryFiles;
    /** The first entry point takes exactly one token per call (a static-shape program). */
    public final boolean singleTokenEntry;
    /** The KV cache's element type (kv_cache.dtype); an ExecuTorch int8 cache runs on qwen-edge's own kernels. */
    public final String kvCacheDtype;
    /** The reference fixture's file (FixtureCheck runs it), or null for a bundle exported before fixtures. */
    public final String fixtureFile;

    private Manifest(Map<String, Object> m) {
        target = Json.string(m.get("target"), "target");
        backend = Json.string(m.get("backend"), "backend");
        quant = Json.string(Json.object(m.get("quant"), "quant").get("name"), "quant.name");
        maxSeqLen = positive(m.get("max_seq_len"), "max_seq_len");
        vocabSize = positive(Json.object(m.get("architecture"), "architecture").get("vocab_size"),
                "architecture.vocab_size");
        qwen3Template = !"checkpoint".equals(m.get("chat_template"));
        Map<String, Object> s = Json.object(m.get("special_tokens"), "special_tokens");
        List<Object> eosList = Json.array(s.get("eos"), "special_tokens.eos");
        int[] eos = new int[eosList.size()];
        for (int i = 0; i < eos.length; i++) {
            eos[i] = token(eosList.get(i), "special_tokens.eos", vocabSize);
        }
        special = new SpecialTokens(token(s.get("im_start"), "special_tokens.im_start", vocabSize),
                token(s.get("im_end"), "special_tokens.im_end", vocabSize),
                token(s.get("think_open"), "special_tokens.think_open", vocabSize),
                token(s.get("think_close"), "special_tokens.think_close", vocabSize),
                token(s.get("endoftext"), "special_tokens.endoftext", vocabSize), eos);
        Map<String, Object> thinking = Json.object(m.get("thinking"), "thinking");
        stopThinkingText = Json.string(thinking.get("stop_text"), "thinking.stop_text");
        List<Object> ids = Json.array(thinking.get("stop_token_ids"), "thinking.stop_token_ids");
        if (ids.isEmpty()) {
            throw new IllegalArgumentException("thinking.stop_token_ids is empty");
        }
        stopThinkingIds = new int[ids.size()];
        for (int i = 0; i < ids.size(); i++) {
            stopThinkingIds[i] = token(ids.get(i), "thinking.stop_token_ids", vocabSize);
        }
        Map<String, FileEntry> fileMap = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Json.object(m.get("files"), "files").entrySet()) {
            Map<String, Object> entry = Json.object(e.getValue(), "files." + e.getKey());
            String sha = Json.string(entry.get("sha256"), "files." + e.getKey() + ".sha256");
            if (!sha.matches("[0-9a-f]{64}")) {
                throw new IllegalArgumentException("files." + e.getKey() + ".sha256 is not a sha256");
            }
            long bytes = Json.integer(entry.get("bytes"), "files." + e.getKey() + ".bytes");
            if (bytes < 0) {
                throw new IllegalArgumentException("files." + e.getKey() + ".bytes is negative");
            }
            fileMap.put(e.getKey(), new FileEntry(sha, bytes));
        }
        files = Collections.unmodifiableMap(fileMap);
        List<String> entries = new ArrayList<>();
        List<Object> points = Json.array(m.get("entry_points"), "entry_points");
        if (points.isEmpty()) {
            throw new IllegalArgumentException("entry_points is empty");
        }
        for (Object point : points) {
            entries.add(Json.string(Json.object(point, "entry point").get("file"), "entry point file"));
        }
        entryFiles = Collections.unmodifiableList(entries);
        Object inputs = Json.object(points.get(0), "entry point").get("inputs");
        boolean single = false;
        if (inputs instanceof List && !((List<?>) inputs).isEmpty() && ((List<?>) inputs).get(0) instanceof Map) {
            Object shape = ((Map<?, ?>) ((List<?>) inputs).get(0)).get("shape");
            single = shape instanceof List && ((List<?>) shape).size() == 2
                    && Long.valueOf(1).equals(((List<?>) shape).get(1));
        }
        singleTokenEntry = single;
        kvCacheDtype = Json.string(Json.object(m.get("kv_cache"), "kv_cache").get("dtype"), "kv_cache.dtype");
        Object fixture = m.get("fixture");
        fixtureFile = fixture == null ? null : Json.string(Json.object(fixture, "fixture").get("file"), "fixture.file");
    }

    /** Parses and checks a manifest's UTF-8 bytes; Manifest.Invalid says what is wrong (one line) and its code. */
    public static Manifest parse(byte[] utf8) {
        Object value;
        try {
            value = Json.parse(utf8);
        } catch (IllegalArgumentException ex) {
            throw new Invalid(Problem.Code.MANIFEST_INVALID, "manifest.json is not valid JSON (" + ex.getMessage() + ")");
        }
        return parse(value);
    }

    public static Manifest parse(String json) {
        return parse(json.getBytes(StandardCharsets.UTF_8));
    }

    private static Manifest parse(Object value) {
        if (!(value instanceof Map)) {
            throw new Invalid(Problem.Code.MANIFEST_INVALID, "manifest.json is not a JSON object");
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) value;
        Object version = m.get("format_version");
        Long whole = Json.wholeNumber(version);
        if (whole == null || whole != FORMAT_VERSION) {
            throw new Invalid(Problem.Code.FORMAT_VERSION, "format_version "
                    + (m.containsKey("format_version") ? Json.write(version, 0) : "(none)") + " is not "
                    + FORMAT_VERSION + ", the version this app reads; export the bundle again with this version");
        }
        List<String> errors = ManifestSchema.shipped().errors(m);
        if (!errors.isEmpty()) {
            throw new Invalid(Problem.Code.SCHEMA, "manifest: " + errors.get(0)
                    + (errors.size() > 1 ? " (and " + (errors.size() - 1) + " more)" : ""));
        }
        try {
            return new Manifest(m);
        } catch (IllegalArgumentException ex) {  // the schema passed, so only a field the app reads stricter
            throw new Invalid(Problem.Code.SCHEMA, "manifest: " + ex.getMessage());
        }
    }

    private static int positive(Object value, String what) {
        long v = Json.integer(value, what);
        if (v < 1 || v > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(what + " must be a positive integer");
        }
        return (int) v;
    }

    /** A token id the model can be fed: one of the embedding's vocabSize rows (a larger id reads past it). */
    private static int token(Object value, String what, int vocabSize) {
        long v = Json.integer(value, what);
        if (v < 0) {
            throw new IllegalArgumentException(what + " is not a token id");
        }
        if (v >= vocabSize) {
            throw new IllegalArgumentException(what + " " + v + " is past architecture.vocab_size " + vocabSize
                    + " (the embedding's rows)");
        }
        return (int) v;
    }
}
