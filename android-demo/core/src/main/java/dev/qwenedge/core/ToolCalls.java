package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Qwen3's tool calls read out of a model's output, mirroring runtimes/tool_calls.py rule for rule (both replay
 * tests/golden/tool_calls.json): the reasoning inside {@code <think>}, then each {@code <tool_call>} block holding a
 * strict JSON object with a non-empty "name" and an object "arguments" (absent means empty). A block that breaks a
 * rule stays in the content verbatim and is reported as an {@link Error}; parsing never throws.
 */
public final class ToolCalls {
    static final String THINK_OPEN = "<think>";
    static final String THINK_CLOSE = "</think>";
    static final String CALL_OPEN = "<tool_call>";
    static final String CALL_CLOSE = "</tool_call>";

    /** One call: the function's name and its arguments as plain JSON values (see {@link Json}). */
    public static final class Call {
        public final String name;
        public final Map<String, Object> arguments;

        public Call(String name, Map<String, Object> arguments) {
            this.name = name;
            this.arguments = Collections.unmodifiableMap(new LinkedHashMap<>(arguments));
        }

        /** The arguments as one line of JSON, as OpenAI's API carries them. */
        public String argumentsJson() {
            return Json.write(arguments, 0);
        }
    }

    /** A block that is not a call: its kind (unclosed, invalid_json, not_object, missing_name, bad_arguments). */
    public static final class Error {
        public final String kind;
        public final String raw;

        public Error(String kind, String raw) {
            this.kind = kind;
            this.raw = raw;
        }

        @Override
        public String toString() {
            return kind + ": " + raw;
        }
    }

    /** What an output parses to. */
    public static final class Parsed {
        public final String content;
        public final String reasoning;
        public final List<Call> calls;
        public final List<Error> errors;

        Parsed(String content, String reasoning, List<Call> calls, List<Error> errors) {
            this.content = content;
            this.reasoning = reasoning;
            this.calls = Collections.unmodifiableList(calls);
            this.errors = Collections.unmodifiableList(errors);
        }
    }

    private ToolCalls() {
    }

    /** Parses a raw output, think block included. */
    public static Parsed parse(String output) {
        int close = output.indexOf(THINK_CLOSE);
        if (close >= 0) {
            String before = output.substring(0, close);
            int opened = before.lastIndexOf(THINK_OPEN);
            String reasoning = opened >= 0 ? before.substring(opened + THINK_OPEN.length()) : before;
            String rest = (opened >= 0 ? before.substring(0, opened) : "")
                    + output.substring(close + THINK_CLOSE.length());
            return parse(rest, ChatTemplate.strip(reasoning, '\n'));
        }
        int opened = output.indexOf(THINK_OPEN);
        if (opened >= 0) {
            return parse(output.substring(0, opened),
                    ChatTemplate.strip(output.substring(opened + THINK_OPEN.length()), '\n'));
        }
        return parse(output, "");
    }

    /** Parses an answer whose reasoning was already split off (the Generator keeps them apart). */
    public static Parsed parse(String answer, String reasoning) {
        StringBuilder content = new StringBuilder();
        List<Call> calls = new ArrayList<>();
        List<Error> errors = new ArrayList<>();
        int position = 0;
        while (true) {
            int start = answer.indexOf(CALL_OPEN, position);
            if (start < 0) {
                content.append(answer, position, answer.length());
                break;
            }
            content.append(answer, position, start);
            int bodyStart = start + CALL_OPEN.length();
            int end = answer.indexOf(CALL_CLOSE, bodyStart);
            int reopened = answer.indexOf(CALL_OPEN, bodyStart);
            if (end < 0 || (reopened >= 0 && reopened < end)) {
                int stop = reopened >= 0 ? reopened : answer.length();
                errors.add(new Error("unclosed", answer.substring(start, stop)));
                content.append(answer, start, stop);
                position = stop;
                continue;
            }
            int after = end + CALL_CLOSE.length();
            Object call = call(answer.substring(bodyStart, end));
            if (call instanceof Call) {
                calls.add((Call) call);
            } else {
                errors.add(new Error((String) call, answer.substring(start, after)));
                content.append(answer, start, after);
            }
            position = after;
        }
        return new Parsed(trim(content.toString()), reasoning, calls, errors);
    }

    /** The call in one block's body, or the kind of its error. */
    private static Object call(String body) {
        Object value;
        try {
            value = Json.parse(trim(body));
        } catch (IllegalArgumentException ex) {
            return "invalid_json";
        }
        if (!(value instanceof Map)) {
            return "not_object";
        }
        Map<String, Object> object = Json.object(value, "tool call");
        Object name = object.get("name");
        if (!(name instanceof String) || ((String) name).isEmpty()) {
            return "missing_name";
        }
        Object arguments = object.containsKey("arguments") ? object.get("arguments") : new LinkedHashMap<>();
        if (!(arguments instanceof Map)) {
            return "bad_arguments";
        }
        return new Call((String) name, Json.object(arguments, "arguments"));
    }

    /** Spaces, tabs and line breaks off both ends (the same set in every language). */
    static String trim(String s) {
        int i = 0;
        int j = s.length();
        while (i < j && " \t\r\n".indexOf(s.charAt(i)) >= 0) {
            i++;
        }
        while (j > i && " \t\r\n".indexOf(s.charAt(j - 1)) >= 0) {
            j--;
        }
        return s.substring(i, j);
    }
}
