package dev.qwenedge.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * runtimes/manifest.schema.json (a byte-identical copy ships as this package's resource; a test compares them)
 * applied with the part of JSON Schema draft 2020-12 that it uses: type, const, enum, required, properties,
 * additionalProperties, items, minItems, minProperties, minLength, pattern, minimum, exclusiveMinimum and local
 * $refs. A keyword outside that list fails validation, so a schema change this code does not know about
 * rejects manifests instead of waving them through. The Swift core has the same validator.
 */
public final class ManifestSchema {
    // (no Set.of, InputStream.transferTo or String.repeat in the core: Android has them from API 30-33 only)
    public static final Set<String> ANNOTATIONS = Collections.unmodifiableSet(new HashSet<>(Arrays.asList(
            "$schema", "$id", "title", "description", "$defs")));
    public static final Set<String> KEYWORDS = Collections.unmodifiableSet(new HashSet<>(Arrays.asList(
            "type", "const", "enum", "required", "properties", "additionalProperties", "items", "minItems",
            "minProperties", "minLength", "pattern", "minimum", "exclusiveMinimum", "$ref")));
    public static final String RESOURCE = "manifest.schema.json";

    private static ManifestSchema shipped;

    private final Object root;

    public ManifestSchema(Object root) {
        this.root = root;
    }

    /** The schema that ships with the core. */
    public static synchronized ManifestSchema shipped() {
        if (shipped == null) {
            try (InputStream in = ManifestSchema.class.getResourceAsStream(RESOURCE)) {
                if (in == null) {
                    throw new IllegalStateException("the core's resource " + RESOURCE + " is missing");
                }
                ByteArrayOutputStream bytes = new ByteArrayOutputStream();
                byte[] buffer = new byte[8192];
                for (int n; (n = in.read(buffer)) > 0; ) {
                    bytes.write(buffer, 0, n);
                }
                shipped = new ManifestSchema(Json.parse(bytes.toByteArray()));
            } catch (IOException ex) {
                throw new IllegalStateException(ex);
            }
        }
        return shipped;
    }

    public Object root() {
        return root;
    }

    /** Every way `instance` breaks the schema, as "path: message" lines (empty when valid). */
    public List<String> errors(Object instance) {
        List<String> out = new ArrayList<>();
        check(instance, root, "(root)", out);
        return out;
    }

    private Object resolve(String ref) {
        if (!ref.startsWith("#/")) {
            return null;
        }
        Object node = root;
        for (String part : ref.substring(2).split("/", -1)) {
            if (!(node instanceof Map)) {
                return null;
            }
            node = ((Map<?, ?>) node).get(part.replace("~1", "/").replace("~0", "~"));
        }
        return node;
    }

    static boolean matches(Object value, String type) {
        switch (type) {
            case "null": return value == null;
            case "boolean": return value instanceof Boolean;
            case "string": return value instanceof String;
            case "array": return value instanceof List;
            case "object": return value instanceof Map;
            case "number": return value instanceof Long || value instanceof Double;
            case "integer": return Json.wholeNumber(value) != null;
            default: return false;
        }
    }

    /** JSON equality: numbers by value (1 == 1.0), booleans apart from numbers. */
    static boolean same(Object a, Object b) {
        if (a instanceof Number && b instanceof Number) {
            return ((Number) a).doubleValue() == ((Number) b).doubleValue();
        }
        if (a instanceof List && b instanceof List) {
            List<?> x = (List<?>) a;
            List<?> y = (List<?>) b;
            if (x.size() != y.size()) {
                return false;
            }
            for (int i = 0; i < x.size(); i++) {
                if (!same(x.get(i), y.get(i))) {
                    return false;
                }
            }
            return true;
        }
        if (a instanceof Map && b instanceof Map) {
            Map<?, ?> x = (Map<?, ?>) a;
            Map<?, ?> y = (Map<?, ?>) b;
            if (!x.keySet().equals(y.keySet())) {
                return false;
            }
            for (Object key : x.keySet()) {
                if (!same(x.get(key), y.get(key))) {
                    return false;
                }
            }
            return true;
        }
        return Objects.equals(a, b);
    }

    private static String child(String path, String key) {
        return path.equals("(root)") ? key : path + "/" + key;
    }

    private static long bound(Object rule) {
        Long whole = Json.wholeNumber(rule);
        return whole == null ? 0 : whole;
    }

    private void check(Object value, Object schema, String path, List<String> out) {
        if (!(schema instanceof Map)) {
            if (Boolean.FALSE.equals(schema)) {
                out.add(path + ": is not allowed");
            }
            return;
        }
        Map<?, ?> rules = (Map<?, ?>) schema;
        for (Map.Entry<?, ?> e : rules.entrySet()) {
            String keyword = (String) e.getKey();
            Object rule = e.getValue();
            if (ANNOTATIONS.contains(keyword)) {
                continue;
            }
            switch (keyword) {
                case "$ref": {
                    Object target = rule instanceof String ? resolve((String) rule) : null;
                    if (target == null) {
                        out.add(path + ": unresolvable $ref");
                    } else {
                        check(value, target, path, out);
                    }
                    break;
                }
                case "type": {
                    List<String> types = new ArrayList<>();
                    if (rule instanceof List) {
                        for (Object t : (List<?>) rule) {
                            types.add(String.valueOf(t));
                        }
                    } else {
                        types.add(String.valueOf(rule));
                    }
                    if (types.stream().noneMatch(t -> matches(value, t))) {
                        out.add(path + ": is not of type " + String.join(", ", types));
                    }
                    break;
                }
                case "const":
                    if (!same(value, rule)) {
                        out.add(path + ": must be " + Json.write(rule, 0));
                    }
                    break;
                case "enum":
                    if (!(rule instanceof List) || ((List<?>) rule).stream().noneMatch(r -> same(value, r))) {
                        out.add(path + ": is not one of " + Json.write(rule, 0));
                    }
                    break;
                case "required":
                    if (value instanceof Map && rule instanceof List) {
                        for (Object key : (List<?>) rule) {
                            if (!((Map<?, ?>) value).containsKey(key)) {
                                out.add(path + ": '" + key + "' is a required property");
                            }
                        }
                    }
                    break;
                case "properties":
                    if (value instanceof Map && rule instanceof Map) {
                        for (Map.Entry<?, ?> p : ((Map<?, ?>) rule).entrySet()) {
                            Map<?, ?> object = (Map<?, ?>) value;
                            if (object.containsKey(p.getKey())) {
                                check(object.get(p.getKey()), p.getValue(), child(path, (String) p.getKey()), out);
                            }
                        }
                    }
                    break;
                case "additionalProperties":
                    if (value instanceof Map) {
                        Object known = rules.get("properties");
                        for (Map.Entry<?, ?> p : ((Map<?, ?>) value).entrySet()) {
                            if (!(known instanceof Map) || !((Map<?, ?>) known).containsKey(p.getKey())) {
                                check(p.getValue(), rule, child(path, (String) p.getKey()), out);
                            }
                        }
                    }
                    break;
                case "items":
                    if (value instanceof List) {
                        List<?> items = (List<?>) value;
                        for (int i = 0; i < items.size(); i++) {
                            check(items.get(i), rule, child(path, String.valueOf(i)), out);
                        }
                    }
                    break;
                case "minItems":
                    if (value instanceof List && ((List<?>) value).size() < bound(rule)) {
                        out.add(path + ": has fewer than " + bound(rule) + " items");
                    }
                    break;
                case "minProperties":
                    if (value instanceof Map && ((Map<?, ?>) value).size() < bound(rule)) {
                        out.add(path + ": has fewer than " + bound(rule) + " properties");
                    }
                    break;
                case "minLength":
                    if (value instanceof String
                            && ((String) value).codePointCount(0, ((String) value).length()) < bound(rule)) {
                        out.add(path + ": is shorter than " + bound(rule));
                    }
                    break;
                case "pattern":
                    if (value instanceof String && !Pattern.compile(String.valueOf(rule)).matcher((String) value).find()) {
                        out.add(path + ": does not match " + rule);
                    }
                    break;
                case "minimum":
                    if ((value instanceof Long || value instanceof Double) && rule instanceof Number
                            && ((Number) value).doubleValue() < ((Number) rule).doubleValue()) {
                        out.add(path + ": is less than the minimum of " + rule);
                    }
                    break;
                case "exclusiveMinimum":
                    if ((value instanceof Long || value instanceof Double) && rule instanceof Number
                            && ((Number) value).doubleValue() <= ((Number) rule).doubleValue()) {
                        out.add(path + ": is less than or equal to the minimum of " + rule);
                    }
                    break;
                default:
                    out.add(path + ": the schema uses " + keyword + ", which this app does not implement");
            }
        }
    }
}
