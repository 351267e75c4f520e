package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

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
        assertEquals(List.of(1L, 2.5, "a\nb", true), Json.parse("[1, 2.5, \"a\\nb\", true]"));
        for (String bad : new String[] {"{", "[1,]", "{\"a\" 1}", "01x", "\"\\q\"", "[1] 2", "nul"}) {
            assertThrows(bad, IllegalArgumentException.class, () -> Json.parse(bad));
        }
        assertThrows(IllegalArgumentException.class, () -> Json.parse("[".repeat(100) + "]".repeat(100)));
    }
}
