package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.List;

/**
 * The generation loop over any LanguageModel, mirroring runtimes/generate.py: prefill, then one token per step,
 * stop-thinking tokens forced when the budget runs out, stop on im_end / endoftext, at most maxNewTokens
 * answer tokens, and the context as the last limit. Token streams go to a Listener tagged reasoning or content.
 */
public final class Generator {
    public interface Listener {
        /** channel is "reasoning" or "content"; forced marks the budget's stop text. */
        void onToken(String channel, int tokenId, boolean forced);
    }

    public static final class Result {
        public final List<Integer> tokenIds = new ArrayList<>();
        public int reasoningTokens;
        public int forcedTokens;
        public int contentTokens;
        public boolean stoppedByBudget;
        public boolean thinking;
        public String finishReason = "context";
        public double ttftMs;
        public double prefillTokensPerS;
        public double decodeTokensPerS;
    }

    private final SpecialTokens special;
    private final int[] stopThinkingIds;
    private final int vocabSize;

    /** vocabSize: the embedding's rows (the manifest's architecture.vocab_size); no id past them reaches the model. */
    public Generator(SpecialTokens special, int[] stopThinkingIds, int vocabSize) {
        if (vocabSize < 1) {
            throw new IllegalArgumentException("vocabSize must be >= 1");
        }
        this.special = special;
        this.stopThinkingIds = stopThinkingIds.clone();
        this.vocabSize = vocabSize;
    }

    /** An id the backend would read past its embedding with (ExecuTorch crashes on one), as one line. */
    private void checkIds(int[] ids, String what) {
        for (int id : ids) {
            if (id < 0 || id >= vocabSize) {
                throw new IllegalArgumentException(what + " holds token id " + id + ", outside the model's "
                        + vocabSize + " embedding rows: the tokenizer does not belong to this model");
            }
        }
    }

    /** prompt: token ids of ChatTemplate.render(...); thinking: whether that prompt opened thinking mode. */
    public Result run(LanguageModel model, int[] prompt, boolean thinking, Integer budget, int maxNewTokens,
                      Sampler sampler, Listener listener) {
        if (maxNewTokens < 1) {
            throw new IllegalArgumentException("maxNewTokens must be >= 1");
        }
        if (budget != null && budget < 0) {
            throw new IllegalArgumentException("thinking budget must be >= 0");
        }
        checkIds(prompt, "the prompt");
        checkIds(stopThinkingIds, "the stop-thinking text");
        if (prompt.length >= model.maxSeqLen()) {
            throw new IllegalArgumentException("the prompt is " + prompt.length + " tokens but the context holds "
                    + model.maxSeqLen());
        }
        Result result = new Result();
        result.thinking = thinking;
        ThinkingBudget controller = new ThinkingBudget(thinking ? budget : null, special.thinkOpen,
                special.thinkClose, stopThinkingIds);
        if (!thinking) {
            controller.done = true; // the prompt already holds the empty think block
        }
        model.reset();
        long start = System.nanoTime();
        float[] logits = model.prefill(prompt);
        long prefillEnd = System.nanoTime();
        long firstToken = -1;
        while (model.position() < model.maxSeqLen()) {
            Integer forced = controller.forcedToken();
            int token = forced != null ? forced : sampler.sample(logits, prompt, result.tokenIds);
            if (token < 0 || token >= vocabSize) {  // logits wider than the embedding (padded): never feed one back
                throw new IllegalStateException("the model's " + logits.length + " logits chose token id " + token
                        + ", outside its " + vocabSize + " embedding rows");
            }
            if (firstToken < 0) {
                firstToken = System.nanoTime();
            }
            result.tokenIds.add(token);
            boolean wasInside = controller.inside();
            controller.observe(token, forced != null);
            if (forced == null && special.isStop(token)) {
                result.finishReason = "stop";
                break;
            }
            if (token != special.thinkOpen && token != special.thinkClose) {
                String channel = wasInside ? "reasoning" : "content";
                if (forced != null) {
                    result.forcedTokens++;
                } else if (!wasInside) {
                    result.contentTokens++;
                }
                if (listener != null) {
                    listener.onToken(channel, token, forced != null);
                }
            }
            if (result.contentTokens >= maxNewTokens) {
                result.finishReason = "length";
                break;
            }
            logits = model.decode(token);
        }
        long end = System.nanoTime();
        result.reasoningTokens = controller.generated();
        result.stoppedByBudget = controller.stoppedByBudget();
        result.ttftMs = ((firstToken < 0 ? end : firstToken) - start) / 1e6;
        result.prefillTokensPerS = prompt.length / Math.max((prefillEnd - start) / 1e9, 1e-9);
        int steps = Math.max(result.tokenIds.size() - 1, 0);
        result.decodeTokensPerS = firstToken > 0 && end > firstToken ? steps / ((end - firstToken) / 1e9) : 0;
        return result;
    }
}
