package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * A bundle's reference fixture (reference_fixture.json, written by the exporter: runtimes/fixture.py) replayed
 * through the app's own LanguageModel, judged as `python -m exporter verify` judges it. Each case runs as chat
 * runs it (greedy, the case's thinking budget and answer limit, from the fixture's prompt ids); where the tokens
 * match the reference's, that run is the teacher-forced one, otherwise the case runs again on the reference's
 * tokens. Per step the model's argmax is compared with the reference's and its logits on the reference's top-k ids
 * with the reference's values. The criterion is the one the exporter recorded in the fixture: a bundle that
 * computes what its reference computes must match greedily and stay within exact_tolerance; one whose kernels
 * round needs top-1 agreement of at least rounded_min_top1, or every disagreement at a near tie.
 */
public final class FixtureCheck {
    /** What the check found; {@link #summary()} is the line an app shows. */
    public static final class Report {
        public boolean passed;
        public String criterion;
        public int cases;
        public int steps;
        public boolean greedyMatch = true;
        public double top1Agreement;
        public double maxAbsLogitDiffTopK;
        public int disagreements;
        /** The widest reference margin among the disagreements, or NaN when there are none. */
        public double maxDisagreementMargin = Double.NaN;

        public String summary() {
            return String.format(Locale.ROOT, "reference fixture %s (%s): %d prompts, %d steps, greedy match %s, "
                    + "top-1 agreement %.4f, max |dlogit| on the top-k %.3g, %d disagreement(s)",
                    passed ? "passed" : "FAILED", criterion, cases, steps, greedyMatch, top1Agreement,
                    maxAbsLogitDiffTopK, disagreements);
        }
    }

    /** A LanguageModel that keeps the logits it returned since its last reset. */
    private static final class Recording implements LanguageModel {
        final LanguageModel model;
        final List<float[]> logits = new ArrayList<>();

        Recording(LanguageModel model) {
            this.model = model;
        }

        @Override
        public float[] prefill(int[] tokenIds) {
            float[] out = model.prefill(tokenIds);
            logits.add(out.clone());
            return out;
        }

        @Override
        public float[] decode(int tokenId) {
            float[] out = model.decode(tokenId);
            logits.add(out.clone());
            return out;
        }

        @Override
        public void reset() {
            model.reset();
            logits.clear();
        }

        @Override
        public int position() {
            return model.position();
        }

        @Override
        public int maxSeqLen() {
            return model.maxSeqLen();
        }
    }

    private FixtureCheck() {
    }

    /** Runs the fixture's UTF-8 bytes through `model`; IllegalArgumentException when the fixture is malformed. */
    public static Report run(Manifest manifest, byte[] fixtureJson, LanguageModel model) {
        Map<String, Object> fixture = Json.object(Json.parse(fixtureJson), "fixture");
        if (!"qwen-edge-reference-fixture".equals(fixture.get("format"))
                || Json.integer(fixture.get("version"), "fixture version") != 1) {
            throw new IllegalArgumentException("not a version 1 qwen-edge-reference-fixture");
        }
        Map<String, Object> criterion = Json.object(fixture.get("criterion"), "fixture criterion");
        boolean byAgreement = Boolean.TRUE.equals(criterion.get("judged_by_agreement"));
        double tolerance = number(criterion.get("exact_tolerance"), "exact_tolerance");
        double minTop1 = number(criterion.get("rounded_min_top1"), "rounded_min_top1");
        double nearTie = number(criterion.get("near_tie_margin"), "near_tie_margin");
        Generator generator = new Generator(manifest.special, manifest.stopThinkingIds, manifest.vocabSize);
        Recording recording = new Recording(model);
        Report report = new Report();
        int agreed = 0;
        boolean allNearTies = true;
        for (Object item : Json.array(fixture.get("cases"), "fixture cases")) {
            Map<String, Object> c = Json.object(item, "fixture case");
            int[] prompt = ids(c.get("prompt_ids"), manifest.vocabSize);
            int[] expected = ids(c.get("token_ids"), manifest.vocabSize);
            List<Object> steps = Json.array(c.get("steps"), "steps");
            if (steps.size() != expected.length || expected.length == 0) {
                throw new IllegalArgumentException("a case's steps and tokens differ in number");
            }
            Object budget = c.get("thinking_budget");
            Generator.Result result = generator.run(recording, prompt, Boolean.TRUE.equals(c.get("thinking")),
                    budget == null ? null : (int) Json.integer(budget, "thinking_budget"),
                    (int) Json.integer(c.get("max_new_tokens"), "max_new_tokens"), Sampler.greedy(), null);
            boolean same = result.tokenIds.size() == expected.length;
            for (int i = 0; same && i < expected.length; i++) {
                same = result.tokenIds.get(i) == expected[i];
            }
            List<float[]> rows = same ? new ArrayList<>(recording.logits) : teacherForced(model, prompt, expected);
            report.greedyMatch &= same;
            for (int i = 0; i < expected.length; i++) {
                Map<String, Object> step = Json.object(steps.get(i), "step");
                int[] top = ids(step.get("top_ids"), manifest.vocabSize);
                List<Object> values = Json.array(step.get("top_logits"), "top_logits");
                if (top.length != values.size() || top.length < 2) {
                    throw new IllegalArgumentException("a step's top_ids and top_logits differ in number");
                }
                float[] row = rows.get(i);
                for (int j = 0; j < top.length; j++) {
                    double diff = Math.abs(row[top[j]] - number(values.get(j), "top_logits"));
                    report.maxAbsLogitDiffTopK = Math.max(report.maxAbsLogitDiffTopK, diff);
                }
                if (Sampler.argmax(row) == top[0]) {
                    agreed++;
                } else {
                    double margin = number(step.get("margin"), "margin");
                    report.disagreements++;
                    report.maxDisagreementMargin = Double.isNaN(report.maxDisagreementMargin) ? margin
                            : Math.max(report.maxDisagreementMargin, margin);
                    allNearTies &= margin <= nearTie;
                }
            }
            report.cases++;
            report.steps += expected.length;
        }
        if (report.steps == 0) {
            throw new IllegalArgumentException("the fixture has no cases");
        }
        report.top1Agreement = (double) agreed / report.steps;
        if (byAgreement) {
            report.criterion = "top-1 agreement >= " + minTop1 + ", or every disagreement at a near tie (margin <= "
                    + nearTie + ")";
            report.passed = report.top1Agreement >= minTop1 || allNearTies;
        } else {
            report.criterion = "greedy match and max |dlogit| on the top-k <= " + tolerance;
            report.passed = report.greedyMatch && report.maxAbsLogitDiffTopK <= tolerance;
        }
        return report;
    }

    /** The model's logits per step over the prompt and the reference's tokens: prefill, then one decode each. */
    private static List<float[]> teacherForced(LanguageModel model, int[] prompt, int[] tokens) {
        List<float[]> rows = new ArrayList<>();
        model.reset();
        rows.add(model.prefill(prompt).clone());
        for (int i = 0; i + 1 < tokens.length; i++) {
            rows.add(model.decode(tokens[i]).clone());
        }
        return rows;
    }

    private static int[] ids(Object list, int vocab) {
        List<Object> values = Json.array(list, "token ids");
        int[] out = new int[values.size()];
        for (int i = 0; i < out.length; i++) {
            long id = Json.integer(values.get(i), "token id");
            if (id < 0 || id >= vocab) {
                throw new IllegalArgumentException("token id " + id + " is outside the vocabulary");
            }
            out[i] = (int) id;
        }
        return out;
    }

    private static double number(Object value, String what) {
        if (!(value instanceof Number)) {
            throw new IllegalArgumentException(what + " is not a number");
        }
        return ((Number) value).doubleValue();
    }
}
