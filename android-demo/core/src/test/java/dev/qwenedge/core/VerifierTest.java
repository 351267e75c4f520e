package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.Test;

/** The same tampering tests/test_verify.py applies, on the fixture bundle the Python side writes. */
public class VerifierTest {
    interface Tamper {
        void apply(Path bundle) throws IOException;
    }

    static Path copyFixture() throws IOException {
        Path source = GoldenTest.root().resolve("tests/golden/bundle");
        Path target = Files.createTempDirectory("qwen-edge-bundle").resolve("b");
        Files.createDirectories(target);
        try (Stream<Path> files = Files.list(source)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.copy(p, target.resolve(p.getFileName()));
            }
        }
        return target;
    }

    static void editManifest(Path bundle, String from, String to) throws IOException {
        Path path = bundle.resolve("manifest.json");
        String text = new String(Files.readAllBytes(path), StandardCharsets.UTF_8);
        if (!text.contains(from)) {
            throw new AssertionError("fixture manifest lacks " + from);
        }
        Files.write(path, text.replaceFirst(java.util.regex.Pattern.quote(from),
                java.util.regex.Matcher.quoteReplacement(to)).getBytes(StandardCharsets.UTF_8));
    }

    static Map<String, Object[]> tampering() {
        Map<String, Object[]> kinds = new LinkedHashMap<>();
        kinds.put("changed byte", new Object[] {(Tamper) b -> {
            byte[] data = Files.readAllBytes(b.resolve("model.bin"));
            data[data.length / 2] ^= (byte) 0xFF;
            Files.write(b.resolve("model.bin"), data);
        }, "does not match its sha256"});
        kinds.put("truncated file", new Object[] {(Tamper) b -> {
            byte[] data = Files.readAllBytes(b.resolve("model.bin"));
            Files.write(b.resolve("model.bin"), java.util.Arrays.copyOf(data, data.length - 10));
        }, "bytes, manifest says"});
        kinds.put("missing file", new Object[] {(Tamper) b -> Files.delete(b.resolve("tokenizer_config.json")),
                "tokenizer_config.json is missing"});
        kinds.put("extra file", new Object[] {(Tamper) b -> Files.write(b.resolve("payload.so"), new byte[] {0x7f}),
                "payload.so is not in the manifest"});
        kinds.put("path escape", new Object[] {(Tamper) b -> editManifest(b, "\"files\": {",
                "\"files\": {\"../secret.txt\": {\"sha256\": \"" + "0".repeat(64) + "\", \"bytes\": 1},"),
                "leaves the bundle"});
        kinds.put("absolute path", new Object[] {(Tamper) b -> editManifest(b, "\"files\": {",
                "\"files\": {\"/etc/passwd\": {\"sha256\": \"" + "0".repeat(64) + "\", \"bytes\": 1},"),
                "is absolute"});
        kinds.put("symlink out", new Object[] {(Tamper) b -> {
            Path outside = b.getParent().resolve("outside.json");
            Files.copy(b.resolve("tokenizer.json"), outside);
            Files.delete(b.resolve("tokenizer.json"));
            Files.createSymbolicLink(b.resolve("tokenizer.json"), outside);
        }, "symbolic link"});
        kinds.put("wrong version", new Object[] {(Tamper) b -> editManifest(b, "\"format_version\": 1",
                "\"format_version\": 2"), "format_version 2 is not 1"});
        kinds.put("schema violation", new Object[] {(Tamper) b -> editManifest(b, "\"special_tokens\"",
                "\"special_tokenz\""), "'special_tokens' is a required property"});
        kinds.put("manifest not JSON", new Object[] {(Tamper) b -> Files.write(b.resolve("manifest.json"),
                "{not json".getBytes(StandardCharsets.UTF_8)), "invalid JSON"});
        kinds.put("manifest missing", new Object[] {(Tamper) b -> Files.delete(b.resolve("manifest.json")),
                "manifest.json is missing"});
        kinds.put("entry point unlisted", new Object[] {(Tamper) b -> editManifest(b, "\"file\": \"model.bin\"",
                "\"file\": \"other.bin\""), "names 'other.bin'"});
        kinds.put("hash edited", new Object[] {(Tamper) b -> {
            String sha = BundleVerifier.sha256(b.resolve("tokenizer.json"));
            editManifest(b, sha, "f".repeat(64));
        }, "tokenizer.json does not match its sha256"});
        return kinds;
    }

    @Test
    public void theFixtureBundleIsGood() throws IOException {
        BundleVerifier.Report report = BundleVerifier.verify(copyFixture());
        assertEquals(java.util.List.of(), report.problems);
        assertNotNull(report.manifest);
        assertEquals(256, report.manifest.maxSeqLen);
        assertEquals(false, report.manifest.singleTokenEntry); // the fixture declares tokens [1, "seq_len"]
    }

    @Test
    public void everyKindOfTamperingIsCaught() throws IOException {
        Map<String, Object[]> kinds = tampering();
        assertTrue(kinds.size() >= 10);
        for (Map.Entry<String, Object[]> kind : kinds.entrySet()) {
            Path bundle = copyFixture();
            ((Tamper) kind.getValue()[0]).apply(bundle);
            BundleVerifier.Report report = BundleVerifier.verify(bundle);
            String message = (String) kind.getValue()[1];
            assertTrue(kind.getKey() + ": " + report.problems,
                    report.problems.stream().anyMatch(p -> p.contains(message)));
            delete(bundle.getParent());
        }
    }

    @Test
    public void unsafePathsMatchThePythonRule() {
        assertNull(BundleVerifier.unsafePath("model.onnx"));
        assertNull(BundleVerifier.unsafePath("a/b.bin"));
        for (String bad : new String[] {"../x", "/x", "a/../../x", "a\\..\\x", "", "./x"}) {
            assertNotNull(bad, BundleVerifier.unsafePath(bad));
        }
    }

    static void delete(Path dir) throws IOException {
        try (Stream<Path> walk = Files.walk(dir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
