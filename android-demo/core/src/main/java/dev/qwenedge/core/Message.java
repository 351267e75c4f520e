package dev.qwenedge.core;

/** One chat turn. reasoning is the assistant's thinking when kept apart from content (may be null). */
public final class Message {
    public final String role;
    public final String content;
    public final String reasoning;

    public Message(String role, String content) {
        this(role, content, null);
    }

    public Message(String role, String content, String reasoning) {
        this.role = role;
        this.content = content;
        this.reasoning = reasoning;
    }
}
