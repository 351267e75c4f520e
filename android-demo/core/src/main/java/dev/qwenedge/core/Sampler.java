package dev.qwenedge.core;

import java.security.SecureRandom;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Choosing the next token, mirroring runtimes/sampling.py step for step (its docstring states the algorithm): a
 * repetition penalty over the prompt and the generated tokens, a presence penalty over the generated ones; greedy at
 * temperature 0; else candidates ordered by value (ties by lower id), top-k, softmax, min-p, top-p, and one draw from
 * SplitMix64. A seed gives the same tokens as the Python runtime and the iOS core (tests/golden/sampling.json).
 */
public final class Sampler {
    /** What to sample with: temperature 0 is greedy; topK 0, topP 1, minP 0 and the penalties' neutral values are off. */
    public static final class Params {
        public final double temperature;
        public final int topK;
        public final double topP;
        public final double minP;
        public final double repetitionPenalty;
        public final double presencePenalty;

        public Params(double temperature, int topK, double topP, double minP, double repetitionPenalty,
                      double presencePenalty) {
            if (!(temperature >= 0) || Double.isInfinite(temperature) || topK < 0 || !(topP > 0 && topP <= 1)
                    || !(minP >= 0 && minP < 1) || !(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)
                    || !(presencePenalty >= 0 && presencePenalty <= PRESENCE_PENALTY_MAX)) {
                throw new IllegalArgumentException("sampling parameters out of range: temperature " + temperature
                        + ", top_k " + topK + ", top_p " + topP + ", min_p " + minP + ", repetition_penalty "
                        + repetitionPenalty + ", presence_penalty " + presencePenalty);
            }
            this.temperature = temperature;
            this.topK = topK;
            this.topP = topP;
            this.minP = minP;
            this.repetitionPenalty = repetitionPenalty;
            this.presencePenalty = presencePenalty;
        }

        Params withPenalties(double repetition, double presence) {
            return new Params(temperature, topK, topP, minP, repetition, presence);
        }

        /**
         * The defaults for the mode in effect, from a bundle's generation_config.json (an empty map without one),
         * as SamplingParams.for_mode: do_sample false is greedy; thinking takes the config's temperature, top_p,
         * top_k and min_p (each missing one Qwen's documented thinking value); non-thinking takes Qwen's documented
         * non-thinking values; the penalties come from the config in both modes.
         */
        public static Params forMode(Map<String, Object> generationConfig, boolean thinking) {
            double repetition = number(generationConfig, "repetition_penalty", 1.0);
            double presence = number(generationConfig, "presence_penalty", 0.0);
            if (Boolean.FALSE.equals(generationConfig.get("do_sample"))) {
                return GREEDY.withPenalties(repetition, presence);
            }
            if (!thinking) {
                return QWEN3_NON_THINKING.withPenalties(repetition, presence);
            }
            Params d = QWEN3_THINKING;
            return new Params(number(generationConfig, "temperature", d.temperature),
                    (int) number(generationConfig, "top_k", d.topK), number(generationConfig, "top_p", d.topP),
                    number(generationConfig, "min_p", d.minP), repetition, presence);
        }

        private static double number(Map<String, Object> config, String key, double otherwise) {
            Object value = config.get(key);
            return value instanceof Number ? ((Number) value).doubleValue() : otherwise;
        }
    }

    public static final double PRESENCE_PENALTY_MAX = 2.0;
    public static final Params GREEDY = new Params(0, 0, 1, 0, 1, 0);
    /** Qwen3's documented values (its model card); greedy is advised against in thinking mode. */
    public static final Params QWEN3_THINKING = new Params(0.6, 20, 0.95, 0, 1, 0);
    public static final Params QWEN3_NON_THINKING = new Params(0.7, 20, 0.8, 0, 1, 0);

    public final Params params;
    public final long seed;
    private long state;

    public Sampler(Params params, long seed) {
        this.params = params;
        this.seed = seed;
        this.state = seed;
    }

    /** A fresh random seed (read it from `seed` to reproduce the run). */
    public Sampler(Params params) {
        this(params, new SecureRandom().nextLong());
    }

    public static Sampler greedy() {
        return new Sampler(GREEDY, 0);
    }

    /** SplitMix64's next output (unsigned, in a long). */
    public long nextLong() {
        state += 0x9E3779B97F4A7C15L;
        long z = state;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, 1): the top 53 bits of the next output. */
    public double nextDouble() {
        return (nextLong() >>> 11) * 0x1.0p-53;
    }

    public static int argmax(double[] values) {
        int best = 0;
        for (int i = 1; i < values.length; i++) {
            if (values[i] > values[best]) {
                best = i;
            }
        }
        return best;
    }

    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        return best;
    }

    /** prompt: the prompt's ids (repetition penalty only); generated: every token after the prompt so far. */
    public int sample(float[] logits, int[] prompt, List<Integer> generated) {
        int n = logits.length;
        double[] values = new double[n];
        for (int i = 0; i < n; i++) {
            values[i] = logits[i];
        }
        if (params.repetitionPenalty != 1.0) {
            boolean[] seen = new boolean[n];
            for (int id : prompt) {
                seen[id] = true;
            }
            for (int id : generated) {
                seen[id] = true;
            }
            for (int i = 0; i < n; i++) {
                if (seen[i]) {
                    values[i] = values[i] > 0 ? values[i] / params.repetitionPenalty
                            : values[i] * params.repetitionPenalty;
                }
            }
        }
        if (params.presencePenalty != 0) {
            boolean[] seen = new boolean[n];
            for (int id : generated) {
                seen[id] = true;
            }
            for (int i = 0; i < n; i++) {
                if (seen[i]) {
                    values[i] -= params.presencePenalty;
                }
            }
        }
        if (params.temperature == 0) {
            return argmax(values);
        }
        return choose(values, nextDouble());
    }

    private int choose(double[] values, double draw) {
        int n = values.length;
        double[] scaled = new double[n];
        for (int i = 0; i < n; i++) {
            scaled[i] = values[i] / params.temperature;
        }
        int[] order = candidates(scaled, params.topK);
        int count = order.length;
        double[] probs = new double[count];
        double total = 0;
        for (int i = 0; i < count; i++) {
            probs[i] = Math.exp(scaled[order[i]] - scaled[order[0]]);
            total += probs[i];
        }
        for (int i = 0; i < count; i++) {
            probs[i] /= total;
        }
        int kept = count;
        if (params.minP != 0) {
            double floor = params.minP * probs[0];
            kept = 0;
            for (double p : probs) {
                if (p >= floor) {
                    kept++;
                }
            }
        }
        double[] running = new double[kept];
        double sum = 0;
        for (int i = 0; i < kept; i++) {
            sum += probs[i];
            running[i] = sum;
        }
        if (params.topP < 1.0) {
            for (int i = 0; i < kept; i++) {
                if (running[i] >= params.topP) {
                    kept = i + 1;
                    break;
                }
            }
        }
        double target = draw * running[kept - 1];
        for (int i = 0; i < kept; i++) {
            if (running[i] > target) {
                return order[i];
            }
        }
        return order[kept - 1];
    }

    /** Token ids by value, highest first, ties by lower id; the first topK of them when topK > 0. */
    static int[] candidates(double[] scaled, int topK) {
        int n = scaled.length;
        if (topK > 0 && topK < n) {
            int[] best = new int[topK];
            int size = 0;
            for (int id = 0; id < n; id++) {
                // ids come in increasing order, so an equal value never displaces an earlier id
                if (size == topK && !(scaled[id] > scaled[best[size - 1]])) {
                    continue;
                }
                int at = size == topK ? size - 1 : size++;
                while (at > 0 && scaled[id] > scaled[best[at - 1]]) {
                    best[at] = best[at - 1];
                    at--;
                }
                best[at] = id;
            }
            return best;
        }
        Integer[] ids = new Integer[n];
        for (int i = 0; i < n; i++) {
            ids[i] = i;
        }
        Arrays.sort(ids, (a, b) -> scaled[a] != scaled[b] ? Double.compare(scaled[b], scaled[a])
                : Integer.compare(a, b));
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            out[i] = ids[i];
        }
        return out;
    }
}
