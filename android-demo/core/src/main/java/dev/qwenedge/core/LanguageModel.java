package dev.qwenedge.core;

/**
 * What the generation loop needs from a backend (ExecuTorch's Module, ONNX Runtime, or a test double): the
 * same protocol as the Python runtimes' backends.
 */
public interface LanguageModel {
    /** Feeds the prompt; returns the logits of its last position. */
    float[] prefill(int[] tokenIds);

    /** Feeds one token; returns the logits of its position. */
    float[] decode(int tokenId);

    /** Forgets the KV cache. */
    void reset();

    /** Positions the cache holds. */
    int position();

    /** The context the model was exported for. */
    int maxSeqLen();
}
