package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Battery samples taken during a generation (BatteryManager's current in microamperes, signed as the phone
 * reports it, and voltage in millivolts), integrated to joules, and exported as the JSON that
 * `python -m exporter bench --android-energy FILE` imports (source: android).
 */
public final class EnergyRecord {
    private final List<long[]> samples = new ArrayList<>();

    public void add(long timeMs, long currentMicroamps, long voltageMillivolts) {
        samples.add(new long[] {timeMs, currentMicroamps, voltageMillivolts});
    }

    public int size() {
        return samples.size();
    }

    /** Trapezoids of |I| x V over each interval, as runtimes/bench/energy.py integrates the same record. */
    public double joules() {
        double joules = 0;
        for (int i = 1; i < samples.size(); i++) {
            long[] a = samples.get(i - 1);
            long[] b = samples.get(i);
            double powerA = Math.abs(a[1]) * a[2] * 1e-9;
            double powerB = Math.abs(b[1]) * b[2] * 1e-9;
            joules += (powerA + powerB) / 2 * (b[0] - a[0]) / 1e3;
        }
        return joules;
    }

    public String toJson(String device, String bundle, int tokens) {
        StringBuilder out = new StringBuilder();
        out.append("{\"device\": ").append(quote(device)).append(", \"bundle\": ").append(quote(bundle))
                .append(", \"tokens\": ").append(tokens).append(", \"joules\": ")
                .append(String.format(Locale.ROOT, "%.6f", joules())).append(", \"samples\": [");
        for (int i = 0; i < samples.size(); i++) {
            long[] s = samples.get(i);
            out.append(i == 0 ? "" : ", ").append("{\"t_ms\": ").append(s[0]).append(", \"current_ua\": ")
                    .append(s[1]).append(", \"voltage_mv\": ").append(s[2]).append('}');
        }
        return out.append("]}").toString();
    }

    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
