package dev.qwenedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.Test;

/**
 * What the shared table (TamperTableTest) cannot say: the app's pinned manifest digest, the path rule on its own,
 * and what a good bundle's manifest gives the app. The tampering itself is in tests/golden/tamper.json.
 */
public class VerifierTest {
    static Path fixture() {
        return GoldenTest.root().resolve("tests/golden/bundle");
    }

    @Test
    public void theFixtureBundleIsGoodAndReadsAsTheAppNeedsIt() throws IOException {
        BundleVerifier.Report report = BundleVerifier.verify(fixture());
        assertEquals(List.of(), report.problems);
        Manifest manifest = report.manifest;
        assertNotNull(manifest);
        assertEquals(256, manifest.maxSeqLen);
        assertEquals(382, manifest.vocabSize);
        assertEquals("fp32", manifest.quant);
        assertArrayEquals(new int[] {0, 2}, manifest.special.eos);
        assertEquals(List.of("model.bin"), manifest.entryFiles);
        assertEquals(1024, manifest.files.get("model.bin").bytes);
        assertEquals(false, manifest.singleTokenEntry); // the fixture declares tokens [1, "seq_len"]
    }

    @Test
    public void aPinnedDigestMustMatch() throws IOException {
        String digest = BundleVerifier.sha256(Files.readAllBytes(fixture().resolve("manifest.json")));
        assertEquals(List.of(), BundleVerifier.verify(fixture(), digest).problems);
        assertEquals(List.of(), BundleVerifier.verify(fixture(), digest.toUpperCase(java.util.Locale.ROOT)).problems);
        BundleVerifier.Report wrong = BundleVerifier.verify(fixture(), "0".repeat(64));
        assertEquals(EnumSet.of(Problem.Code.MANIFEST_DIGEST), wrong.codes());
        assertTrue(wrong.problems.get(0).message, wrong.problems.get(0).message.contains(digest));
    }

    @Test
    public void unsafePathsMatchThePythonRule() {
        assertNull(BundleVerifier.unsafePath("model.onnx"));
        assertNull(BundleVerifier.unsafePath("a/b.bin"));
        for (String bad : new String[] {"../x", "/x", "a/../../x", "a\\..\\x", "", "./x", "~/x", "a//b", "a/", "a\0b"}) {
            assertNotNull(bad, BundleVerifier.unsafePath(bad));
        }
    }

    /** The core's copy of the schema is the Python side's, byte for byte, and uses only implemented keywords. */
    /** Keywords of `schema` (and of its subschemas: properties, $defs, items, additionalProperties) not implemented. */
    static void unknownKeywords(Object schema, Set<String> out) {
        if (!(schema instanceof Map)) {
            return;
        }
        for (Map.Entry<?, ?> e : ((Map<?, ?>) schema).entrySet()) {
            String key = (String) e.getKey();
            if (!ManifestSchema.KEYWORDS.contains(key) && !ManifestSchema.ANNOTATIONS.contains(key)) {
                out.add(key);
            }
            if ((key.equals("properties") || key.equals("$defs")) && e.getValue() instanceof Map) {
                for (Object sub : ((Map<?, ?>) e.getValue()).values()) {
                    unknownKeywords(sub, out);
                }
            } else if (key.equals("items") || key.equals("additionalProperties")) {
                unknownKeywords(e.getValue(), out);
            }
        }
    }

    @Test
    public void theShippedSchemaIsRuntimesSchema() throws IOException {
        byte[] python = Files.readAllBytes(GoldenTest.root().resolve("runtimes/manifest.schema.json"));
        byte[] shipped;
        try (java.io.InputStream in = ManifestSchema.class.getResourceAsStream(ManifestSchema.RESOURCE)) {
            assertNotNull("resource " + ManifestSchema.RESOURCE, in);
            shipped = in.readAllBytes();
        }
        assertArrayEquals("copy runtimes/manifest.schema.json to core/src/main/resources/dev/qwenedge/core/",
                python, shipped);
        Set<String> unknown = new TreeSet<>();
        unknownKeywords(ManifestSchema.shipped().root(), unknown);
        assertEquals(Set.of(), unknown);
        assertEquals(List.of(), ManifestSchema.shipped().errors(Json.parse(Files.readAllBytes(fixture().resolve(
                "manifest.json")))));
    }
}
