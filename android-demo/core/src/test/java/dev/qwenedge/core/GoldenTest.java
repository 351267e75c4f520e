package dev.qwenedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Replays tests/golden/tiny.json, written by the Python runtime (python -m runtimes.golden): the same rendered
 * prompts, the same thinking decision, and the same token stream, including where the budget cuts the
 * thinking and which stop-thinking ids are forced.
 */
public class GoldenTest {
    static Path root() {
        return Path.of(System.getProperty("qwenedge.root", "../.."));
    }

    static Map<String, Object> golden() throws Exception {
        String text = new String(Files.readAllBytes(root().resolve("tests/golden/tiny.json")), StandardCharsets.UTF_8);
        return Json.object(Json.parse(text), "golden");
    }

    static int[] ints(Object list) {
        List<Object> values = Json.array(list, "ids");
        int[] out = new int[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (int) Json.integer(values.get(i), "id");
        }
        return out;
    }

    static List<Message> messages(Object list) {
        List<Message> out = new ArrayList<>();
        for (Object item : Json.array(list, "messages")) {
            Map<String, Object> m = Json.object(item, "message");
            out.add(new Message((String) m.get("role"), (String) m.get("content"),
                    (String) m.get("reasoning_content")));
        }
        return out;
    }

    /** A model whose logits at step k (k tokens after the prompt) point at the golden k-th generated token. */
    static final class ScriptedModel implements LanguageModel {
        private final int promptLength;
        private final int[] script;
        private final int vocab;
        private int position;

        ScriptedModel(int promptLength, int[] script, int vocab) {
            this.promptLength = promptLength;
            this.script = script;
            this.vocab = vocab;
        }

        private float[] logits() {
            float[] out = new float[vocab];
            int step = position - promptLength;
            if (step < script.length) {
                out[script[step]] = 1f;
            }
            return out;
        }

        @Override public float[] prefill(int[] tokenIds) {
            position += tokenIds.length;
            return logits();
        }

        @Override public float[] decode(int tokenId) {
            position += 1;
            return logits();
        }

        @Override public void reset() {
            position = 0;
        }

        @Override public int position() {
            return position;
        }

        @Override public int maxSeqLen() {
            return 512;
        }
    }

    @Test
    public void rendersAndGeneratesExactlyAsThePythonRuntime() throws Exception {
        Map<String, Object> golden = golden();
        Map<String, Object> ids = Json.object(golden.get("special_ids"), "special_ids");
        int imEnd = (int) Json.integer(ids.get("im_end"), "im_end");
        int eot = (int) Json.integer(ids.get("endoftext"), "endoftext");
        SpecialTokens special = new SpecialTokens((int) Json.integer(ids.get("im_start"), "im_start"), imEnd,
                (int) Json.integer(ids.get("think_open"), "think_open"),
                (int) Json.integer(ids.get("think_close"), "think_close"), eot, new int[] {imEnd, eot});
        int vocab = Manifest.parse(Files.readAllBytes(root().resolve("tests/golden/bundle/manifest.json"))).vocabSize;
        Generator generator = new Generator(special, ints(golden.get("stop_thinking_ids")), vocab);
        int maxNew = (int) Json.integer(golden.get("max_new_tokens"), "max_new_tokens");
        List<Object> cases = Json.array(golden.get("cases"), "cases");
        assertEquals(8, cases.size());
        int cut = 0;
        for (Object item : cases) {
            Map<String, Object> c = Json.object(item, "case");
            List<Message> conversation = messages(c.get("messages"));
            Integer budget = c.get("budget") == null ? null : (int) Json.integer(c.get("budget"), "budget");
            boolean thinking = ChatTemplate.thinks(conversation, budget, true);
            assertEquals("thinking mode of " + c.get("messages"), c.get("thinking"), thinking);
            assertEquals(c.get("prompt_text"), ChatTemplate.render(conversation, true, thinking));
            int[] prompt = ints(c.get("prompt_ids"));
            int[] expected = ints(c.get("generated_ids"));
            Generator.Result result = generator.run(new ScriptedModel(prompt.length, expected, vocab), prompt,
                    thinking, budget, maxNew, Sampler.greedy(), null);
            int[] got = result.tokenIds.stream().mapToInt(Integer::intValue).toArray();
            assertArrayEquals("tokens of " + c.get("messages") + " budget " + budget, expected, got);
            assertEquals(c.get("reasoning_tokens"), (long) result.reasoningTokens);
            assertEquals(c.get("stopped_by_budget"), result.stoppedByBudget);
            assertEquals(c.get("finish_reason"), result.finishReason);
            cut += result.stoppedByBudget ? 1 : 0;
        }
        assertEquals("cases cut by the budget", 3, cut);
    }

    @Test
    public void stopTextIdsMatchTheFixtureManifest() throws Exception {
        String text = new String(Files.readAllBytes(root().resolve("tests/golden/bundle/manifest.json")),
                StandardCharsets.UTF_8);
        Manifest manifest = Manifest.parse(text);
        Map<String, Object> golden = golden();
        assertArrayEquals(ints(golden.get("stop_thinking_ids")), manifest.stopThinkingIds);
        assertEquals(golden.get("stop_thinking_text"), manifest.stopThinkingText);
    }

    @Test
    public void softSwitchesAndBudgetZeroTurnThinkingOff() {
        List<Message> noThink = List.of(new Message("user", "What is 2 + 2? /no_think"));
        List<Message> backOn = List.of(new Message("user", "a /no_think"), new Message("assistant", "b"),
                new Message("user", "c /think"));
        assertEquals(false, ChatTemplate.thinks(noThink, null, true));
        assertEquals(true, ChatTemplate.thinks(backOn, null, true));
        assertEquals(false, ChatTemplate.thinks(backOn, 0, true));
        assertEquals(true, ChatTemplate.render(noThink, true, false).endsWith("<think>\n\n</think>\n\n"));
    }
}
