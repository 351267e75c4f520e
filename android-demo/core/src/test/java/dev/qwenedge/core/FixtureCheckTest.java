package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * FixtureCheck on tests/golden/reference_fixture.json (tiny's int4 ONNX bundle's fixture, judged by agreement)
 * with a scripted LanguageModel that replays the fixture's own top-k logits: it passes as recorded, fails with one
 * flip at a wide margin, and passes with one flip at a near tie.
 */
public class FixtureCheckTest {
    static byte[] fixtureBytes() throws Exception {
        return Files.readAllBytes(GoldenTest.root().resolve("tests/golden/reference_fixture.json"));
    }

    static Manifest manifest() throws Exception {
        return Manifest.parse(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/bundle/manifest.json")));
    }

    /**
     * Logits rebuilt from the fixture: at each step the recorded top-k values on the recorded ids and every other
     * id below them. The case is the one whose prompt was prefilled; `bump` raises one id at one step.
     */
    static final class ReplayModel implements LanguageModel {
        private final List<Object> cases;
        private final int vocab;
        private final int bumpCase;
        private final int bumpStep;
        private Object currentCase;
        private List<Object> steps;
        private int promptLength;
        private int position;

        ReplayModel(Map<String, Object> fixture, int vocab, int bumpCase, int bumpStep) {
            this.cases = Json.array(fixture.get("cases"), "cases");
            this.vocab = vocab;
            this.bumpCase = bumpCase;
            this.bumpStep = bumpStep;
        }

        private float[] logits() {
            int step = position - promptLength;
            float[] out = new float[vocab];
            Map<String, Object> record = Json.object(steps.get(Math.min(step, steps.size() - 1)), "step");
            int[] top = GoldenTest.ints(record.get("top_ids"));
            List<Object> values = Json.array(record.get("top_logits"), "top_logits");
            Arrays.fill(out, ((Number) values.get(values.size() - 1)).floatValue() - 1f);
            for (int j = 0; j < top.length; j++) {
                out[top[j]] = ((Number) values.get(j)).floatValue();
            }
            if (cases.indexOf(currentCase) == bumpCase && step == bumpStep) {
                out[top[1]] = out[top[0]] + 0.5f;  // the runner-up wins: a flip
            }
            return out;
        }

        @Override
        public float[] prefill(int[] tokenIds) {
            for (Object c : cases) {
                if (Arrays.equals(GoldenTest.ints(Json.object(c, "case").get("prompt_ids")), tokenIds)) {
                    currentCase = c;
                }
            }
            steps = Json.array(Json.object(currentCase, "case").get("steps"), "steps");
            promptLength = tokenIds.length;
            position += tokenIds.length;
            return logits();
        }

        @Override
        public float[] decode(int tokenId) {
            position++;
            return logits();
        }

        @Override
        public void reset() {
            position = 0;
        }

        @Override
        public int position() {
            return position;
        }

        @Override
        public int maxSeqLen() {
            return 256;
        }
    }

    static Map<String, Object> fixture() throws Exception {
        return Json.object(Json.parse(new String(fixtureBytes(), java.nio.charset.StandardCharsets.UTF_8)), "fixture");
    }

    static double margin(int caseIndex, int step) throws Exception {
        Map<String, Object> c = Json.object(Json.array(fixture().get("cases"), "cases").get(caseIndex), "case");
        return ((Number) Json.object(Json.array(c.get("steps"), "steps").get(step), "step").get("margin"))
                .doubleValue();
    }

    @Test
    public void theRecordedLogitsPass() throws Exception {
        Manifest manifest = manifest();
        FixtureCheck.Report report = FixtureCheck.run(manifest, fixtureBytes(),
                new ReplayModel(fixture(), manifest.vocabSize, -1, -1));
        assertTrue(report.summary(), report.passed);
        assertTrue(report.greedyMatch);
        assertEquals(1.0, report.top1Agreement, 0.0);
        assertEquals(3, report.cases);
        assertTrue(report.maxAbsLogitDiffTopK <= 1e-6);
        assertTrue(report.summary().startsWith("reference fixture passed"));
    }

    @Test
    public void oneFlipAtAWideMarginFails() throws Exception {
        Manifest manifest = manifest();
        assertTrue(margin(0, 2) > 1.0);  // the thinking case's third step: far from a tie
        FixtureCheck.Report report = FixtureCheck.run(manifest, fixtureBytes(),
                new ReplayModel(fixture(), manifest.vocabSize, 0, 2));
        assertFalse(report.summary(), report.passed);
        assertFalse(report.greedyMatch);  // the free run took the flipped token; teacher forcing did not
        assertEquals(1, report.disagreements);
        assertEquals(margin(0, 2), report.maxDisagreementMargin, 0.0);
        assertTrue(report.top1Agreement < 0.99);
        assertTrue(report.summary().startsWith("reference fixture FAILED"));
    }

    @Test
    public void oneFlipAtANearTiePasses() throws Exception {
        Manifest manifest = manifest();
        List<Object> steps = Json.array(Json.object(Json.array(fixture().get("cases"), "cases").get(0), "case")
                .get("steps"), "steps");
        int near = -1;
        for (int i = 0; i < steps.size() && near < 0; i++) {
            if (margin(0, i) < 0.5) {
                near = i;
            }
        }
        assertTrue("the fixture has a near tie", near >= 0);
        FixtureCheck.Report report = FixtureCheck.run(manifest, fixtureBytes(),
                new ReplayModel(fixture(), manifest.vocabSize, 0, near));
        assertTrue(report.summary(), report.passed);
        assertEquals(1, report.disagreements);
    }

    @Test
    public void theManifestNamesItsFixture() throws Exception {
        assertEquals(null, manifest().fixtureFile);  // the golden bundle predates fixtures: still a valid manifest
        Map<String, Object> m = Json.object(Json.parse(Files.readAllBytes(
                GoldenTest.root().resolve("tests/golden/bundle/manifest.json"))), "manifest");
        Map<String, Object> record = new java.util.LinkedHashMap<>();
        record.put("file", "reference_fixture.json");
        record.put("reference", "fp32");
        record.put("top_k", 8L);
        record.put("cases", 3L);
        record.put("steps", 93L);
        m.put("fixture", record);
        assertEquals("reference_fixture.json", Manifest.parse(Json.write(m, 2)).fixtureFile);
        record.put("top_k", 1L);  // the schema's bound
        try {
            Manifest.parse(Json.write(m, 2));
            throw new AssertionError("a top_k of 1 passed the schema");
        } catch (Manifest.Invalid expected) {
            assertEquals(Problem.Code.SCHEMA, expected.code);
        }
    }

    @Test(expected = IllegalArgumentException.class)
    public void aMalformedFixtureIsRefused() throws Exception {
        Manifest manifest = manifest();
        FixtureCheck.run(manifest, "{\"format\": \"other\", \"version\": 1}".getBytes(
                java.nio.charset.StandardCharsets.UTF_8), new ReplayModel(fixture(), manifest.vocabSize, -1, -1));
    }
}
