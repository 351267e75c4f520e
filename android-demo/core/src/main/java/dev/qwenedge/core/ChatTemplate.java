package dev.qwenedge.core;

import java.util.ArrayList;
import java.util.Comparator;
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

    /**
     * User text stays text (as runtimes/chat.py, replaying tests/golden/user_text.json): every special-token string
     * (the tokenizer's added tokens) inside user and tool content gets TEXT_MARK, a Unicode noncharacter, after its
     * first character, so the template never sees it; {@link #encodingChunks} then cuts the rendered prompt there.
     */
    public static final String TEXT_MARK = "\uFDD0";

    private static List<String> longestFirst(List<String> specialTokens) {
        List<String> sorted = new ArrayList<>();
        for (String token : specialTokens) {
            if (token.length() > 1 && !sorted.contains(token)) {
                sorted.add(token);
            }
        }
        sorted.sort(Comparator.comparingInt(String::length).reversed());
        return sorted;
    }

    /** The longest special-token string that starts at `at`, or null. */
    private static String specialAt(String text, int at, List<String> sorted) {
        for (String token : sorted) {
            if (text.startsWith(token, at)) {
                return token;
            }
        }
        return null;
    }

    /** `messages` with every special-token string in user and tool content broken by TEXT_MARK. */
    public static List<Message> userTextAsText(List<Message> messages, List<String> specialTokens) {
        List<String> sorted = longestFirst(specialTokens);
        List<Message> out = new ArrayList<>();
        for (Message m : messages) {
            if (!(m.role.equals("user") || m.role.equals("tool")) || m.content == null) {
                out.add(m);
                continue;
            }
            StringBuilder text = new StringBuilder();
            int i = 0;
            while (i < m.content.length()) {
                String token = specialAt(m.content, i, sorted);
                if (token == null) {
                    text.append(m.content.charAt(i));
                    i++;
                } else {
                    text.append(token.charAt(0)).append(TEXT_MARK).append(token, 1, token.length());
                    i += token.length();
                }
            }
            out.add(new Message(m.role, text.toString(), m.reasoning));
        }
        return out;
    }

    /**
     * A prompt rendered from userTextAsText's messages, cut where a special-token string was marked, the marks
     * dropped: the app's tokenizer encodes the chunks one by one, so only the template's control tokens are special.
     */
    public static List<String> encodingChunks(String text, List<String> specialTokens) {
        List<String> chunks = new ArrayList<>();
        List<String> marked = new ArrayList<>();
        for (String token : longestFirst(specialTokens)) {
            marked.add(token.charAt(0) + TEXT_MARK + token.substring(1));
        }
        int start = 0;
        int i = 0;
        while (i < text.length()) {
            String token = specialAt(text, i, marked);
            if (token == null) {
                i++;
                continue;
            }
            chunks.add(text.substring(start, i + 1));
            start = i + 1 + TEXT_MARK.length();
            i += token.length();
        }
        chunks.add(text.substring(start));
        chunks.removeIf(String::isEmpty);
        return chunks;
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

    /**
     * Whether a turn thinks, as runtimes/generate.py thinking_mode: the hard switches (the app's toggle, budget 0)
     * win over the soft ones, as in Qwen's template; with thinking on, the last /think or /no_think decides.
     */
    public static boolean thinks(List<Message> messages, Integer budget, boolean enableThinking) {
        return enableThinking && (budget == null || budget != 0) && thinkingRequested(messages, true);
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
