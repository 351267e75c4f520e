package dev.qwenedge.core;

import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Qwen3's chat template, mirroring runtimes/chat.py line for line (checked against the golden vectors the
 * Python runtime writes): system turn, earlier assistant reasoning dropped, the empty think block when
 * thinking is off, and the /think and /no_think soft switches.
 */
public final class ChatTemplate {
    private static final Pattern SOFT_SWITCH = Pattern.compile("/(no_think|think)\\b");

    private ChatTemplate() {
    }

    static boolean isToolResponse(String content) {
        return content.startsWith("<tool_response>") && content.endsWith("</tool_response>");
    }

    /** {reasoning, answer} of an assistant message that carries its think block inline. */
    static String[] splitReasoning(String content) {
        int close = content.lastIndexOf("</think>");
        if (close < 0) {
            return new String[] {"", content};
        }
        String answer = stripLeading(content.substring(close + "</think>".length()), '\n');
        String before = content.substring(0, content.indexOf("</think>"));
        before = stripTrailing(before, '\n');
        int open = before.lastIndexOf("<think>");
        String reasoning = stripLeading(open >= 0 ? before.substring(open + "<think>".length()) : before, '\n');
        return new String[] {reasoning, answer};
    }

    public static String render(List<Message> messages, boolean addGenerationPrompt, boolean enableThinking) {
        if (messages.isEmpty()) {
            throw new IllegalArgumentException("a conversation needs at least one message");
        }
        for (Message m : messages) {
            if (!(m.role.equals("system") || m.role.equals("user") || m.role.equals("assistant")
                    || m.role.equals("tool")) || m.content == null) {
                throw new IllegalArgumentException("bad chat message: role " + m.role);
            }
        }
        StringBuilder out = new StringBuilder();
        if (messages.get(0).role.equals("system")) {
            out.append("<|im_start|>system\n").append(messages.get(0).content).append("<|im_end|>\n");
        }
        int lastQuery = messages.size() - 1;
        for (int i = messages.size() - 1; i >= 0; i--) {
            Message m = messages.get(i);
            if (m.role.equals("user") && !isToolResponse(m.content)) {
                lastQuery = i;
                break;
            }
        }
        for (int i = 0; i < messages.size(); i++) {
            Message m = messages.get(i);
            String content = m.content;
            if (m.role.equals("user") || (m.role.equals("system") && i > 0)) {
                out.append("<|im_start|>").append(m.role).append('\n').append(content).append("<|im_end|>\n");
            } else if (m.role.equals("assistant")) {
                String reasoning;
                if (m.reasoning != null) {
                    reasoning = m.reasoning;
                } else {
                    String[] split = splitReasoning(content);
                    reasoning = split[0];
                    content = split[1];
                }
                if (i > lastQuery && (i == messages.size() - 1 || !reasoning.isEmpty())) {
                    out.append("<|im_start|>assistant\n<think>\n").append(strip(reasoning, '\n'))
                            .append("\n</think>\n\n").append(stripLeading(content, '\n'));
                } else {
                    out.append("<|im_start|>assistant\n").append(content);
                }
                out.append("<|im_end|>\n");
            } else if (m.role.equals("tool")) {
                if (i == 0 || !messages.get(i - 1).role.equals("tool")) {
                    out.append("<|im_start|>user");
                }
                out.append("\n<tool_response>\n").append(content).append("\n</tool_response>");
                if (i == messages.size() - 1 || !messages.get(i + 1).role.equals("tool")) {
                    out.append("<|im_end|>\n");
                }
            }
        }
        if (addGenerationPrompt) {
            out.append("<|im_start|>assistant\n");
            if (!enableThinking) {
                out.append("<think>\n\n</think>\n\n");
            }
        }
        return out.toString();
    }

    /** Qwen3's soft switches: the last /think or /no_think in the user turns wins. */
    public static boolean thinkingRequested(List<Message> messages, boolean defaultMode) {
        boolean mode = defaultMode;
        for (Message m : messages) {
            if (m.role.equals("user")) {
                Matcher matcher = SOFT_SWITCH.matcher(m.content);
                while (matcher.find()) {
                    mode = matcher.group(1).equals("think");
                }
            }
        }
        return mode;
    }

    /** Whether a turn thinks: soft switches, the app's toggle, and budget 0 (which means no thinking). */
    public static boolean thinks(List<Message> messages, Integer budget, boolean enableThinking) {
        return thinkingRequested(messages, enableThinking) && (budget == null || budget != 0);
    }

    static String stripLeading(String s, char c) {
        int i = 0;
        while (i < s.length() && s.charAt(i) == c) {
            i++;
        }
        return s.substring(i);
    }

    static String stripTrailing(String s, char c) {
        int j = s.length();
        while (j > 0 && s.charAt(j - 1) == c) {
            j--;
        }
        return s.substring(0, j);
    }

    static String strip(String s, char c) {
        return stripTrailing(stripLeading(s, c), c);
    }
}
