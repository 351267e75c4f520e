package dev.qwenedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Replays tests/golden/sampling.json, written by the Python runtime (python -m tools.golden --sampling-out): the
 * same seed and logits pick the same tokens, SplitMix64 gives the same outputs, and the per-mode defaults match.
 */
public class SamplingTest {
    static Map<String, Object> golden() throws Exception {
        String text = new String(Files.readAllBytes(GoldenTest.root().resolve("tests/golden/sampling.json")),
                StandardCharsets.UTF_8);
        return Json.object(Json.parse(text), "sampling golden");
    }

    static double number(Object value) {
        return ((Number) value).doubleValue();
    }

    static Sampler.Params params(Map<String, Object> p) {
        return new Sampler.Params(number(p.get("temperature")), (int) Json.integer(p.get("top_k"), "top_k"),
                number(p.get("top_p")), number(p.get("min_p")), number(p.get("repetition_penalty")),
                number(p.get("presence_penalty")));
    }

    static long seed(Object hex) {
        return hex == null ? 0 : Long.parseUnsignedLong((String) hex, 16);
    }

    @Test
    public void seededDecisionsMatchThePythonRuntime() throws Exception {
        List<Object> cases = Json.array(golden().get("cases"), "cases");
        assertEquals(8, cases.size());
        for (Object item : cases) {
            Map<String, Object> c = Json.object(item, "case");
            Map<String, Object> p = Json.object(c.get("params"), "params");
            Sampler sampler = new Sampler(params(p), seed(p.get("seed")));
            int[] prompt = GoldenTest.ints(c.get("prompt_ids"));
            List<Integer> generated = new ArrayList<>();
            for (Object step : Json.array(c.get("logits"), "logits")) {
                List<Object> values = Json.array(step, "step");
                float[] logits = new float[values.size()];
                for (int i = 0; i < logits.length; i++) {
                    logits[i] = (float) number(values.get(i));
                }
                generated.add(sampler.sample(logits, prompt, generated));
            }
            int[] got = generated.stream().mapToInt(Integer::intValue).toArray();
            assertArrayEquals((String) c.get("name"), GoldenTest.ints(c.get("chosen")), got);
        }
    }

    @Test
    public void splitMix64MatchesThePythonRuntime() throws Exception {
        for (Object item : Json.array(golden().get("splitmix64"), "splitmix64")) {
            Map<String, Object> e = Json.object(item, "entry");
            Sampler outputs = new Sampler(Sampler.GREEDY, seed(e.get("seed")));
            for (Object hex : Json.array(e.get("next_u64"), "next_u64")) {
                assertEquals(hex, String.format("%016x", outputs.nextLong()));
            }
            Sampler draws = new Sampler(Sampler.GREEDY, seed(e.get("seed")));
            for (Object value : Json.array(e.get("next_float"), "next_float")) {
                assertEquals(number(value), draws.nextDouble(), 0.0);
            }
        }
    }

    @Test
    public void defaultsByModeMatchThePythonRuntime() throws Exception {
        for (Object item : Json.array(golden().get("defaults"), "defaults")) {
            Map<String, Object> c = Json.object(item, "case");
            Sampler.Params want = params(Json.object(c.get("params"), "params"));
            Sampler.Params got = Sampler.Params.forMode(Json.object(c.get("generation_config"), "config"),
                    (Boolean) c.get("thinking"));
            String name = c.get("name") + " thinking " + c.get("thinking");
            assertEquals(name, want.temperature, got.temperature, 0.0);
            assertEquals(name, want.topK, got.topK);
            assertEquals(name, want.topP, got.topP, 0.0);
            assertEquals(name, want.minP, got.minP, 0.0);
            assertEquals(name, want.repetitionPenalty, got.repetitionPenalty, 0.0);
            assertEquals(name, want.presencePenalty, got.presencePenalty, 0.0);
        }
    }

    @Test
    public void theHardSwitchBeatsTheSoftOne() {
        List<Message> think = List.of(new Message("user", "go /think"));
        assertEquals(false, ChatTemplate.thinks(think, null, false));
        assertEquals(true, ChatTemplate.thinks(think, null, true));
        assertEquals(false, ChatTemplate.thinks(think, 0, true));
    }

    @Test
    public void anUnseededSamplerDrawsItsOwnSeed() {
        assertNotEquals(new Sampler(Sampler.QWEN3_THINKING).seed, new Sampler(Sampler.QWEN3_THINKING).seed);
    }
}
