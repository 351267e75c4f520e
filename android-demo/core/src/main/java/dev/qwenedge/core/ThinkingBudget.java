package dev.qwenedge.core;

import java.util.ArrayDeque;

/**
 * Budget-capped thinking, mirroring runtimes/thinking.py: counts the tokens the model generates inside
 * think; once budget are spent without a close tag, hands back the stop-thinking token ids (from the
 * manifest) to feed one per step. A null budget is unlimited.
 */
public final class ThinkingBudget {
    private final Integer budget;
    private final int thinkOpen;
    private final int thinkClose;
    private final int[] stopIds;
    private final ArrayDeque<Integer> forced = new ArrayDeque<>();
    boolean inside;
    boolean done;
    int generated;
    boolean stoppedByBudget;

    public ThinkingBudget(Integer budget, int thinkOpen, int thinkClose, int[] stopIds) {
        this.budget = budget;
        this.thinkOpen = thinkOpen;
        this.thinkClose = thinkClose;
        this.stopIds = stopIds.clone();
    }

    /** The next token to feed instead of sampling, or null. */
    public Integer forcedToken() {
        return forced.pollFirst();
    }

    public void observe(int token, boolean wasForced) {
        if (!inside) {
            if (token == thinkOpen && !done) {
                inside = true;
            }
            return;
        }
        if (token == thinkClose) {
            inside = false;
            done = true;
            return;
        }
        if (wasForced) {
            return;
        }
        generated++;
        if (budget != null && generated >= budget) {
            stoppedByBudget = true;
            forced.clear();
            for (int id : stopIds) {
                forced.addLast(id);
            }
        }
    }

    public boolean inside() {
        return inside;
    }

    public int generated() {
        return generated;
    }

    public boolean stoppedByBudget() {
        return stoppedByBudget;
    }
}
