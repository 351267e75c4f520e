package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class EnergyAndJsonTest {
    @Test
    public void energyRecordIntegratesAndExportsWhatBenchImports() {
        EnergyRecord record = new EnergyRecord();
        record.add(0, -500_000, 4000);
        record.add(1000, -700_000, 4000);
        assertEquals(2.4, record.joules(), 1e-9); // mean 0.6 A x 4 V x 1 s, as tests/test_bench.py expects
        Map<String, Object> json = Json.object(Json.parse(record.toJson("Pixel \"8\"", "tiny-et", 10)), "record");
        assertEquals("Pixel \"8\"", json.get("device"));
        assertEquals(10L, json.get("tokens"));
        List<Object> samples = Json.array(json.get("samples"), "samples");
        assertEquals(-700_000L, Json.object(samples.get(1), "sample").get("current_ua"));
    }

    @Test
    public void jsonReaderIsStrict() {
        assertEquals(List.of(1L, -0L, 2.5, 1e-6, 100.0, "a\nbé😀/", true), Json.parse(
                "[1, -0, 2.5, 1e-06, 1E+2, \"a\\nb\\u00e9\\ud83d\\ude00\\/\", true]"));
        for (String bad : new String[] {"01", "-01", "1.", ".5", "1e", "+1", "1E400", "-1e999", "NaN", "Infinity",
                "[1,]", "{\"a\": 1,}", "{\"a\" 1}", "{a: 1}", "'a'", "\"\\q\"", "\"\\ud800\"", "\"a\u0001b\"",
                "\"a\nb\"", "[1] 2", "nul", "", "\uFEFF{}", "{\"a\": 1, \"a\": 2}", "[".repeat(200) + "]".repeat(200)}) {
            assertThrows(bad, IllegalArgumentException.class, () -> Json.parse(bad));
        }
        assertThrows(IllegalArgumentException.class, () -> Json.parse(new byte[] {0x22, (byte) 0xC3, 0x28, 0x22}));
        Json.parse("[".repeat(100) + "]".repeat(100));
    }

    /** The fixture's manifest with max_seq_len written 0256, 256. or 1E400 is not JSON: MANIFEST_INVALID. */
    @Test
    public void manifestsWithInvalidNumbersAreRejected() throws Exception {
        String good = new String(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/bundle/manifest.json")),
                StandardCharsets.UTF_8);
        assertTrue(good.contains("\"max_seq_len\": 256,"));
        assertEquals(256, Manifest.parse(good).maxSeqLen);
        assertEquals(256, Manifest.parse(good.replace("\"max_seq_len\": 256,", "\"max_seq_len\": 256.0,")).maxSeqLen);
        for (String number : new String[] {"0256", "256.", "1E400"}) {
            String text = good.replace("\"max_seq_len\": 256,", "\"max_seq_len\": " + number + ",");
            Manifest.Invalid invalid = assertThrows(number, Manifest.Invalid.class, () -> Manifest.parse(text));
            assertEquals(number, Problem.Code.MANIFEST_INVALID, invalid.code);
        }
        Manifest.Invalid typed = assertThrows(Manifest.Invalid.class,
                () -> Manifest.parse(good.replace("\"max_seq_len\": 256,", "\"max_seq_len\": \"256\",")));
        assertEquals(Problem.Code.SCHEMA, typed.code);
    }

    @Test
    public void jsonWritesTheExportersLayout() {
        Object value = Json.parse("{\"b\": [1, 2], \"a\": {}, \"s\": \"</think>\\u001b\"}");
        assertEquals("{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {},\n  \"s\": \"</think>\\u001b\"\n}", Json.write(value, 2));
    }

    /** A bundle whose chat template is the checkpoint's own is marked so: the app renders Qwen3's only. */
    @Test
    public void theManifestSaysWhoseChatTemplateItIs() throws Exception {
        String good = new String(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/bundle/manifest.json")),
                java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(Manifest.parse(good).qwen3Template);
        String own = good.replace("\"chat_template\": \"qwen3\"", "\"chat_template\": \"checkpoint\"");
        assertNotEquals(good, own);
        assertFalse(Manifest.parse(own).qwen3Template);
    }

    /** The app names the missing kernels when an int8-cache program fails to load: it reads the cache's dtype. */
    @Test
    public void theManifestSaysTheKvCachesDtype() throws Exception {
        String good = new String(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/bundle/manifest.json")),
                StandardCharsets.UTF_8);
        assertEquals("float32", Manifest.parse(good).kvCacheDtype);
        String int8 = good.replace("\"dtype\": \"float32\",\n    \"positions\": 256,\n    \"bytes_at_max_context\": 524288",
                "\"dtype\": \"int8\",\n    \"positions\": 256,\n    \"bytes_at_max_context\": 131072");
        assertNotEquals(good, int8);
        assertEquals("int8", Manifest.parse(int8).kvCacheDtype);
    }
}
