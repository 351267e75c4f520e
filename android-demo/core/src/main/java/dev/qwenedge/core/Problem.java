package dev.qwenedge.core;

import java.util.Objects;

/** One thing wrong with a bundle: its code (the vocabulary of tests/golden/tamper.json) and a line for people. */
public final class Problem {
    /** The problem codes every verifier of the bundle contract reports (Python's verify, this core, the Swift core). */
    public enum Code {
        MANIFEST_MISSING, MANIFEST_INVALID, MANIFEST_DIGEST, SCHEMA, FORMAT_VERSION, UNSAFE_PATH, SYMLINK,
        NOT_REGULAR, MISSING_FILE, SIZE, SHA256, EXTRA_FILE, ENTRY_POINT;

        /** The code as tamper.json and the other verifiers spell it ("manifest_digest"). */
        public String id() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    public final Code code;
    public final String message;

    public Problem(Code code, String message) {
        this.code = code;
        this.message = message;
    }

    @Override
    public String toString() {
        return message;
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Problem && ((Problem) other).code == code && ((Problem) other).message.equals(message);
    }

    @Override
    public int hashCode() {
        return Objects.hash(code, message);
    }
}
