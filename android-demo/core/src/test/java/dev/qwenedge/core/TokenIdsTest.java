package dev.qwenedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * No token id past the embedding's rows reaches a backend (ExecuTorch segfaults on one): the generation loop refuses
 * such a prompt or stop-thinking id before the model sees anything and never feeds such a sampled id back, and the
 * verifier refuses a manifest whose special or stop-thinking ids are past architecture.vocab_size.
 */
public class TokenIdsTest {
    static final int VOCAB = 16;
    static final SpecialTokens SPECIAL = new SpecialTokens(1, 2, 3, 4, 0, new int[] {2, 0});

    /** A model that records every call and whose logits (`width` of them) always point at `next`. */
    static final class RecordingModel implements LanguageModel {
        final List<String> calls = new ArrayList<>();
        final int width;
        final int next;
        int position;

        RecordingModel(int width, int next) {
            this.width = width;
            this.next = next;
        }

        private float[] logits() {
            float[] out = new float[width];
            out[next] = 1f;
            return out;
        }

        @Override public float[] prefill(int[] tokenIds) {
            calls.add("prefill");
            position += tokenIds.length;
            return logits();
        }

        @Override public float[] decode(int tokenId) {
            calls.add("decode " + tokenId);
            position += 1;
            return logits();
        }

        @Override public void reset() {
            calls.add("reset");
            position = 0;
        }

        @Override public int position() {
            return position;
        }

        @Override public int maxSeqLen() {
            return 64;
        }
    }

    static Generator.Result generate(Generator generator, RecordingModel model, int[] prompt) {
        return generator.run(model, prompt, false, null, 4, Sampler.greedy(), null);
    }

    @Test
    public void aPromptIdPastTheVocabularyIsRefusedBeforeTheModelSeesAnything() {
        Generator generator = new Generator(SPECIAL, new int[] {5, 4}, VOCAB);
        for (int bad : new int[] {VOCAB, VOCAB + 1, 50_000_000, -1}) {
            RecordingModel model = new RecordingModel(VOCAB, 7);
            IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                    () -> generate(generator, model, new int[] {1, 9, bad, 2}));
            assertTrue(ex.getMessage(), ex.getMessage().contains("token id " + bad));
            assertTrue(ex.getMessage(), ex.getMessage().contains(VOCAB + " embedding rows"));
            assertEquals(List.of(), model.calls);
        }
        RecordingModel good = new RecordingModel(VOCAB, 7);
        assertEquals(List.of(7, 7, 7, 7), generate(generator, good, new int[] {1, 9, VOCAB - 1, 2}).tokenIds);
        assertEquals(List.of("reset", "prefill", "decode 7", "decode 7", "decode 7"), good.calls);
    }

    @Test
    public void aStopThinkingIdPastTheVocabularyIsRefusedBeforeTheModelSeesAnything() {
        Generator generator = new Generator(SPECIAL, new int[] {5, VOCAB, 4}, VOCAB);
        RecordingModel model = new RecordingModel(VOCAB, 7);
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> generate(generator, model, new int[] {1, 9, 2}));
        assertTrue(ex.getMessage(), ex.getMessage().contains("stop-thinking"));
        assertEquals(List.of(), model.calls);
    }

    @Test
    public void aSampledIdPastTheVocabularyIsNeverFedBack() {
        // logits wider than the embedding (a padded output) whose best column is past its rows
        Generator generator = new Generator(SPECIAL, new int[] {5, 4}, VOCAB);
        RecordingModel model = new RecordingModel(VOCAB + 8, VOCAB + 3);
        IllegalStateException ex = assertThrows(IllegalStateException.class,
                () -> generate(generator, model, new int[] {1, 9, 2}));
        assertTrue(ex.getMessage(), ex.getMessage().contains("token id " + (VOCAB + 3)));
        assertEquals(List.of("reset", "prefill"), model.calls);
    }

    /** The verifier's report on the fixture bundle with `pointer` set to `value` (the digest rewritten). */
    static BundleVerifier.Report tampered(String pointer, Object value) throws Exception {
        Map<String, Object> table = TamperTableTest.table();
        Path bundle = TamperTableTest.copyFixture(table);
        try {
            TamperTableTest.run(Map.of("op", "set", "pointer", pointer, "value", value), bundle);
            return BundleVerifier.verify(bundle);
        } finally {
            TamperTableTest.delete(bundle.getParent());
        }
    }

    @Test
    public void theVerifierRefusesSpecialIdsPastVocabSize() throws Exception {
        Path fixture = VerifierTest.fixture();
        int vocab = BundleVerifier.verify(fixture).manifest.vocabSize;
        Object[][] cases = {
            {"/special_tokens/im_end", (long) vocab, "special_tokens.im_end " + vocab},
            {"/special_tokens/think_open", 50_000_000L, "special_tokens.think_open 50000000"},
            {"/special_tokens/eos/0", (long) vocab + 1, "special_tokens.eos " + (vocab + 1)},
            {"/thinking/stop_token_ids/0", (long) vocab, "thinking.stop_token_ids " + vocab},
        };
        for (Object[] c : cases) {
            BundleVerifier.Report report = tampered((String) c[0], c[1]);
            assertEquals((String) c[0], EnumSet.of(Problem.Code.SCHEMA), report.codes());
            String message = report.problems.get(0).message;
            assertTrue(message, message.contains((String) c[2]) && message.contains("vocab_size " + vocab));
            assertNull(report.manifest);
        }
        assertTrue(tampered("/special_tokens/im_end", (long) vocab - 1).ok());
    }
}
