package dev.qwenedge.core;

import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import com.google.gson.stream.JsonWriter;
import java.io.IOException;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * JSON through Gson's JsonReader in strict mode (the maintained parser, the same on a desktop JVM and on
 * Android), as plain Java values: objects are LinkedHashMap (document order), arrays ArrayList, numbers Long
 * when written as an integer that fits and Double otherwise, strings, Boolean and null.
 *
 * <p>Strict RFC 8259, as the Swift core and the contract in tests/golden/tamper.json read it. Gson's strict mode
 * rejects leading zeros (01), bare fractions (1.), NaN, trailing commas and trailing data; on top of it this
 * class rejects what Gson 2.10 lets through: numbers beyond a double (1E400), a byte order mark, invalid UTF-8,
 * unescaped control characters and lone surrogates in strings, duplicate keys (parsers disagree on which one
 * wins) and more than 128 levels of nesting.
 */
public final class Json {
    public static final int MAX_DEPTH = 128;

    private Json() {
    }

    /** Parses UTF-8 bytes; IllegalArgumentException says what is wrong. */
    public static Object parse(byte[] utf8) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(utf8)).toString();
        } catch (CharacterCodingException ex) {
            throw new IllegalArgumentException("invalid JSON: not UTF-8");
        }
        return parse(text);
    }

    public static Object parse(String text) {
        if (text.startsWith("\uFEFF")) {
            throw new IllegalArgumentException("invalid JSON: starts with a byte order mark");
        }
        rejectControlCharactersInStrings(text);
        JsonReader reader = new JsonReader(new StringReader(text));
        reader.setLenient(false);
        try {
            Object value = read(reader, 0);
            if (reader.peek() != JsonToken.END_DOCUMENT) {
                throw new IllegalArgumentException("invalid JSON: trailing data");
            }
            return value;
        } catch (IOException | IllegalStateException ex) {
            throw new IllegalArgumentException("invalid JSON: " + ex.getMessage());
        }
    }

    /** Strings may hold U+0000..U+001F only escaped (Gson 2.10 accepts them raw). */
    private static void rejectControlCharactersInStrings(String text) {
        boolean inString = false;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (inString) {
                if (c == '\\') {
                    i++;
                } else if (c == '"') {
                    inString = false;
                } else if (c < 0x20) {
                    throw new IllegalArgumentException("invalid JSON: control character in a string at offset " + i);
                }
            } else if (c == '"') {
                inString = true;
            }
        }
    }

    private static Object read(JsonReader in, int depth) throws IOException {
        JsonToken token = in.peek();
        if ((token == JsonToken.BEGIN_OBJECT || token == JsonToken.BEGIN_ARRAY) && depth >= MAX_DEPTH) {
            throw new IllegalArgumentException("invalid JSON: nested deeper than " + MAX_DEPTH + " levels");
        }
        switch (token) {
            case BEGIN_OBJECT: {
                Map<String, Object> map = new LinkedHashMap<>();
                in.beginObject();
                while (in.hasNext()) {
                    String key = checked(in.nextName());
                    if (map.containsKey(key)) {
                        throw new IllegalArgumentException("invalid JSON: duplicate key \"" + key + "\"");
                    }
                    map.put(key, read(in, depth + 1));
                }
                in.endObject();
                return map;
            }
            case BEGIN_ARRAY: {
                List<Object> list = new ArrayList<>();
                in.beginArray();
                while (in.hasNext()) {
                    list.add(read(in, depth + 1));
                }
                in.endArray();
                return list;
            }
            case STRING:
                return checked(in.nextString());
            case NUMBER:
                return number(in.nextString());
            case BOOLEAN:
                return in.nextBoolean();
            case NULL:
                in.nextNull();
                return null;
            default:
                throw new IllegalArgumentException("invalid JSON: unexpected " + token);
        }
    }

    private static String checked(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new IllegalArgumentException("invalid JSON: lone surrogate in a string");
            }
        }
        return s;
    }

    /** The token as Gson read it (already checked against the JSON number grammar). */
    private static Object number(String text) {
        if (text.indexOf('.') < 0 && text.indexOf('e') < 0 && text.indexOf('E') < 0) {
            try {
                return Long.parseLong(text);
            } catch (NumberFormatException ex) {
                // an integer beyond long: a double below
            }
        }
        double value = Double.parseDouble(text);
        if (Double.isInfinite(value) || Double.isNaN(value)) {
            throw new IllegalArgumentException("invalid JSON: number " + text + " is out of range");
        }
        return value;
    }

    /** JSON Schema's integer: a number whose value is whole (256 and 256.0), never a boolean; else null. */
    public static Long wholeNumber(Object value) {
        if (value instanceof Long) {
            return (Long) value;
        }
        if (value instanceof Double) {
            double d = (Double) value;
            if (d == Math.rint(d) && Math.abs(d) < 9.007199254740992E15) {
                return (long) d;
            }
        }
        return null;
    }

    /** Writes `value` with `indent` spaces per level (the exporter's manifest layout for indent 2). */
    public static String write(Object value, int indent) {
        StringWriter out = new StringWriter();
        try (JsonWriter writer = new JsonWriter(out)) {
            StringBuilder spaces = new StringBuilder();
            for (int i = 0; i < indent; i++) {
                spaces.append(' ');
            }
            writer.setIndent(spaces.toString());
            writer.setHtmlSafe(false);
            write(writer, value);
        } catch (IOException ex) {
            throw new IllegalStateException(ex);
        }
        return out.toString();
    }

    private static void write(JsonWriter writer, Object value) throws IOException {
        if (value == null) {
            writer.nullValue();
        } else if (value instanceof Map) {
            writer.beginObject();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                writer.name((String) e.getKey());
                write(writer, e.getValue());
            }
            writer.endObject();
        } else if (value instanceof List) {
            writer.beginArray();
            for (Object item : (List<?>) value) {
                write(writer, item);
            }
            writer.endArray();
        } else if (value instanceof String) {
            writer.value((String) value);
        } else if (value instanceof Boolean) {
            writer.value((Boolean) value);
        } else if (value instanceof Number) {
            writer.value((Number) value);
        } else {
            throw new IllegalArgumentException("not a JSON value: " + value.getClass());
        }
    }

    @SuppressWarnings("unchecked")
    public static Map<String, Object> object(Object value, String what) {
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException(what + " is not a JSON object");
        }
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    public static List<Object> array(Object value, String what) {
        if (!(value instanceof List)) {
            throw new IllegalArgumentException(what + " is not a JSON array");
        }
        return (List<Object>) value;
    }

    public static long integer(Object value, String what) {
        Long whole = wholeNumber(value);
        if (whole == null) {
            throw new IllegalArgumentException(what + " is not an integer");
        }
        return whole;
    }

    public static String string(Object value, String what) {
        if (!(value instanceof String)) {
            throw new IllegalArgumentException(what + " is not a string");
        }
        return (String) value;
    }
}
