package dev.qwenedge.core;

import java.util.Arrays;
import java.util.Random;

/**
 * Greedy (temperature 0) or temperature / top-k / top-p / min-p sampling, in the order the Python runtime
 * applies them. Greedy is exact and deterministic; sampled runs are reproducible for a seed on this core
 * (not bit-identical with Python's generator).
 */
public final class Sampler {
    public final float temperature;
    public final int topK;
    public final float topP;
    public final float minP;
    private final Random random;

    public Sampler(float temperature, int topK, float topP, float minP, long seed) {
        this.temperature = temperature;
        this.topK = topK;
        this.topP = topP;
        this.minP = minP;
        this.random = new Random(seed);
    }

    public static Sampler greedy() {
        return new Sampler(0f, 0, 1f, 0f, 0);
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

    public int sample(float[] logits) {
        if (temperature <= 0f) {
            return argmax(logits);
        }
        int n = logits.length;
        double[] probs = new double[n];
        double max = Double.NEGATIVE_INFINITY;
        for (float l : logits) {
            max = Math.max(max, l / temperature);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            probs[i] = Math.exp(logits[i] / temperature - max);
            sum += probs[i];
        }
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
            probs[i] /= sum;
        }
        Arrays.sort(order, (a, b) -> Double.compare(probs[b], probs[a]));
        int keep = topK > 0 ? Math.min(topK, n) : n;
        double cumulative = 0;
        double floor = minP > 0 ? minP * probs[order[0]] : 0;
        int kept = 0;
        for (int i = 0; i < keep; i++) {
            if (probs[order[i]] < floor) {
                break;
            }
            cumulative += probs[order[i]];
            kept++;
            if (cumulative >= topP) {
                break;
            }
        }
        double r = random.nextDouble() * cumulative;
        for (int i = 0; i < kept; i++) {
            r -= probs[order[i]];
            if (r <= 0) {
                return order[i];
            }
        }
        return order[kept - 1];
    }
}
