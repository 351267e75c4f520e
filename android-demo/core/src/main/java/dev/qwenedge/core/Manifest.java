package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A bundle's manifest.json (runtimes/manifest.schema.json), the one interface between the Python side and the
 * apps. Parsing checks the fields the app relies on; BundleVerifier checks the files.
 */
public final class Manifest {
    public static final int FORMAT_VERSION = 1;
    static final String[] REQUIRED = {"format", "format_version", "created_by", "source_model", "architecture",
            "target", "backend", "quant", "max_seq_len", "kv_cache", "entry_points", "special_tokens", "thinking",
            "files"};

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
    public final SpecialTokens special;
    public final String stopThinkingText;
    public final int[] stopThinkingIds;
    public final Map<String, FileEntry> files;
    public final List<String> entryFiles;
    /** The first entry point takes exactly one token per call (a static-shape program). */
    public final boolean singleTokenEntry;

    private Manifest(Map<String, Object> m) {
        target = Json.string(m.get("target"), "target");
        backend = Json.string(m.get("backend"), "backend");
        quant = Json.string(Json.object(m.get("quant"), "quant").get("name"), "quant.name");
        maxSeqLen = positive(m.get("max_seq_len"), "max_seq_len");
        vocabSize = positive(Json.object(m.get("architecture"), "architecture").get("vocab_size"),
                "architecture.vocab_size");
        Map<String, Object> s = Json.object(m.get("special_tokens"), "special_tokens");
        List<Object> eosList = Json.array(s.get("eos"), "special_tokens.eos");
        int[] eos = new int[eosList.size()];
        for (int i = 0; i < eos.length; i++) {
            eos[i] = token(eosList.get(i), "special_tokens.eos");
        }
        special = new SpecialTokens(token(s.get("im_start"), "im_start"), token(s.get("im_end"), "im_end"),
                token(s.get("think_open"), "think_open"), token(s.get("think_close"), "think_close"),
                token(s.get("endoftext"), "endoftext"), eos);
        Map<String, Object> thinking = Json.object(m.get("thinking"), "thinking");
        stopThinkingText = Json.string(thinking.get("stop_text"), "thinking.stop_text");
        List<Object> ids = Json.array(thinking.get("stop_token_ids"), "thinking.stop_token_ids");
        if (ids.isEmpty()) {
            throw new IllegalArgumentException("thinking.stop_token_ids is empty");
        }
        stopThinkingIds = new int[ids.size()];
        for (int i = 0; i < ids.size(); i++) {
            stopThinkingIds[i] = token(ids.get(i), "thinking.stop_token_ids");
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
    }

    /** Parses and checks a manifest; IllegalArgumentException says what is wrong, in one line. */
    public static Manifest parse(String json) {
        Map<String, Object> m = Json.object(Json.parse(json), "manifest");
        for (String key : REQUIRED) {
            if (!m.containsKey(key)) {
                throw new IllegalArgumentException("'" + key + "' is a required property");
            }
        }
        if (!"qwen-edge-bundle".equals(m.get("format"))) {
            throw new IllegalArgumentException("format is not qwen-edge-bundle");
        }
        Object version = m.get("format_version");
        if (!(version instanceof Long) || (Long) version != FORMAT_VERSION) {
            throw new IllegalArgumentException("format_version " + version + " is not " + FORMAT_VERSION
                    + ", the version this app reads");
        }
        return new Manifest(m);
    }

    private static int positive(Object value, String what) {
        long v = Json.integer(value, what);
        if (v < 1 || v > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(what + " must be a positive integer");
        }
        return (int) v;
    }

    private static int token(Object value, String what) {
        long v = Json.integer(value, what);
        if (v < 0 || v > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(what + " is not a token id");
        }
        return (int) v;
    }
}
