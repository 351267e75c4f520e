package dev.qwenedge.core;

/** Qwen3's special token ids, read from a bundle's manifest (never literals). */
public final class SpecialTokens {
    public final int imStart;
    public final int imEnd;
    public final int thinkOpen;
    public final int thinkClose;
    public final int endOfText;
    public final int[] eos;

    public SpecialTokens(int imStart, int imEnd, int thinkOpen, int thinkClose, int endOfText, int[] eos) {
        this.imStart = imStart;
        this.imEnd = imEnd;
        this.thinkOpen = thinkOpen;
        this.thinkClose = thinkClose;
        this.endOfText = endOfText;
        this.eos = eos.clone();
    }

    public boolean isStop(int token) {
        for (int id : eos) {
            if (id == token) {
                return true;
            }
        }
        return token == imEnd || token == endOfText;
    }
}
